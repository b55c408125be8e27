"""Attention, FlashAttention-2 style: never build the N x N score matrix in GPU memory.

Dao et al., "FlashAttention" (arXiv 2205.14135) and "FlashAttention-2" (arXiv 2307.08691). The forward walks over
tiles of keys with an online softmax (a running max m and running sum l per query row) and saves only the
log-sum-exp per row; the backward recomputes the probabilities tile by tile from it.

Public API (the models call it through `minigen.nn`):

    attention(q, k, v, *, causal=False, key_padding_mask=None, scale=None, backend=None) -> (B, H, N, D)
    attention_reference(q, k, v, *, causal=False, key_padding_mask=None, scale=None, backend=None)

    q                  (B, H, N, D)    any strides; D (head dim) 16..128 for the Triton kernel, any value for the others
    k, v               (B, H, M, D)    M keys (M may differ from N)
    causal             query n sees keys m <= n (top-left aligned, as `torch.nn.functional.scaled_dot_product_attention`)
    key_padding_mask   (B, M) bool, True = keep this key; a query row with no key left returns zeros
    scale              multiplies q.k; default 1/sqrt(D)
    backend            None (choose), "triton", "sdpa" or "reference"; see `minigen.kernels._dispatch`

Order of this file (DESIGN section 5): the reference; the Triton kernels (forward, backward preprocessing,
dK/dV pass, dQ pass); the host functions; the autograd.Function; the dispatcher.
"""
import torch
import torch.nn.functional as F

from ._dispatch import (check_kernel_dtype, check_tensor, choose_backend, interpreting, quick_autotune, records_grad,
                        triton, tl, within_triton_limits)

LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2 e): the kernels use exp2, which the GPU's SFU computes directly
MAX_TRITON_HEAD_DIM = 128


# ---------------------------------------------------------------------------------------------------------------
# 1. Reference: the whole score matrix, in plain PyTorch


def _keep_mask(q, k, causal, key_padding_mask):
    """Which (query, key) pairs take part, broadcastable to (B, H, N, M); None when all do."""
    keep = None
    if key_padding_mask is not None:
        keep = key_padding_mask[:, None, None, :]  # (B, 1, 1, M)
    if causal:
        n, m = q.shape[-2], k.shape[-2]
        lower = torch.ones(n, m, dtype=torch.bool, device=q.device).tril()  # (N, M): key m <= query n
        keep = lower if keep is None else keep & lower  # (B, 1, N, M)
    return keep


def attention_reference(q, k, v, *, causal=False, key_padding_mask=None, scale=None, backend=None):
    """softmax(q k^T * scale) v with the full (B, H, N, M) score matrix. Matmuls run in q's dtype, softmax in fp32.

    `backend` is accepted and ignored so the signature matches `attention`.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, N, D) @ (B, H, D, M) -> (B, H, N, M)
    keep = _keep_mask(q, k, causal, key_padding_mask)
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).nan_to_num(0.0).to(q.dtype)  # (B, H, N, M); all-masked rows -> 0
    return torch.matmul(p, v)  # (B, H, N, M) @ (B, H, M, D) -> (B, H, N, D)


def _attention_sdpa(q, k, v, causal, key_padding_mask, scale):
    """PyTorch's fused attention: the fallback on GPUs the Triton kernel does not serve."""
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    keep = _keep_mask(q, k, causal, key_padding_mask)  # SDPA takes a bool mask with True = take part
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)  # (B, H, N, D)
    # a query with no key left returns zeros, as the kernel and the reference do (some CUDA SDPA backends give NaN)
    return torch.where(keep.any(dim=-1, keepdim=True), out, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# 2. Triton kernels (defined only when triton imports)

if triton is not None:

    def _configs(pairs):
        """Autotuning candidates as (BLOCK_M, BLOCK_N, num_warps, num_stages): first a small one that fits any
        head dim in fp32, then the best guess for every head dim (none that spills at BLOCK_D = 128), then the rest.

        The interpreter gets one small config (it runs programs one by one in NumPy, so tuning would only cost
        time); MINIGEN_AUTOTUNE=0 keeps the first two, which cuts the compile time of a test run on a GPU (every
        new shape key compiles and times each candidate)."""
        if interpreting():
            return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
        if quick_autotune():
            pairs = pairs[:2]
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in pairs]

    def _prune(live_fp32):
        """An `early_config_prune` for one kernel, given the fp32 values its tiles keep live,
        `live_fp32(BLOCK_M, BLOCK_N, BLOCK_D)`. fp32 inputs run exact IEEE products on the CUDA cores, not the tensor
        cores: tuning tiles for them only costs compile time (minutes for the big tiles), so they keep the first,
        small candidate. Otherwise the candidates with more than 160 such values per thread go: compiled for sm_90
        with a launch's arguments (scripts/kernel_resources.py), every candidate above that spilled registers to
        local memory (the forward's 128x64 tile with 4 warps at BLOCK_D = 128, three of the dK/dV tiles at 128, ...)
        and none at or below it did. The first candidate always stays."""
        def prune(configs, named_args, **kwargs):
            if named_args["q_ptr"].dtype == torch.float32:
                return configs[:1]

            def per_thread(c):
                return live_fp32(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], kwargs["BLOCK_D"]) / (32 * c.num_warps)
            return [c for i, c in enumerate(configs) if i == 0 or per_thread(c) <= 160]
        return prune

    # fp32 tiles live in each kernel's loop: the forward's output accumulator (M x D) and scores (M x N); dK/dV's two
    # accumulators (N x D) and the transposed scores and dP (N x M); dQ's accumulator (M x D), scores and dP (M x N)
    _prune_fwd = _prune(lambda m, n, d: m * d + m * n)
    _prune_dkdv = _prune(lambda m, n, d: 2 * n * d + 2 * n * m)
    _prune_dq = _prune(lambda m, n, d: m * d + 2 * m * n)

    # Hopper (H100/H200): 128-query tiles keep the tensor cores fed at D = 64..128; 64-key tiles with 8 warps suit
    # BLOCK_D = 128 (with 4 warps they spill there, and `_prune` drops them), 128-key tiles suit D <= 64. The second
    # entry is the one MINIGEN_AUTOTUNE=0 keeps beside the first, so it is one that every head dim can use. A
    # candidate that does not fit shared memory is skipped.
    _FWD_PAIRS = [(64, 32, 4, 2), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2),
                  (128, 64, 4, 4), (128, 32, 4, 4), (64, 64, 4, 4)]
    _DKDV_PAIRS = [(32, 64, 4, 2), (32, 128, 8, 3), (32, 128, 4, 3), (32, 128, 4, 5), (64, 128, 8, 3), (64, 64, 4, 3)]
    _DQ_PAIRS = [(64, 32, 4, 2), (128, 32, 8, 3), (128, 32, 4, 5), (128, 64, 8, 3), (64, 64, 4, 3)]
    _FWD_CONFIGS, _DKDV_CONFIGS, _DQ_CONFIGS = (_configs(p) for p in (_FWD_PAIRS, _DKDV_PAIRS, _DQ_PAIRS))
    _KEY = ["N_Q", "N_K", "HEAD_DIM", "CAUSAL", "HAS_MASK"]
    # The score tile needs masking only where some pair in it must not take part: a causal or padding mask, or a
    # last key tile that runs past N_K. Most DiT shapes (N a multiple of the tile, no mask) skip it entirely.
    _NEEDS_MASK = {"NEED_MASK": lambda a: bool(a["CAUSAL"] or a["HAS_MASK"] or a["N_K"] % a["BLOCK_N"] != 0)}

    @triton.jit
    def _keep(rows, cols, N_Q, key_ok, CAUSAL: tl.constexpr):
        """Which (query, key) pairs of a tile take part: the query exists, the key exists and is not padding, and
        (causal) the key is not after the query. `rows`, `cols` and `key_ok` come already broadcastable: as
        rows[:, None], cols[None, :] for a (queries, keys) tile, the other way round for its transpose."""
        keep = (rows < N_Q) & key_ok
        if CAUSAL:
            keep = keep & (rows >= cols)
        return keep

    @triton.jit
    def _tile(b, h, idx, offs_d, b_stride, h_stride, n_stride, d_stride):
        """Element offsets of the (len(idx), BLOCK_D) tile of rows `idx` of head h in batch b, any strides."""
        return b * b_stride + h * h_stride + idx[:, None] * n_stride + offs_d[None, :] * d_stride

    @triton.jit
    def _rescale(b_stride, h_stride, n_stride, STRIDE_ALIGN: tl.constexpr):
        """A tensor's batch, head and row strides, passed divided by STRIDE_ALIGN, times that compile-time constant:
        this is how the compiler learns they are multiples of it (see `_stride_align` on the host)."""
        return b_stride * STRIDE_ALIGN, h_stride * STRIDE_ALIGN, n_stride * STRIDE_ALIGN

    @triton.jit
    def _key_ok(mask_ptr, mask_b_stride, mask_n_stride, b, cols, N_K, HAS_MASK: tl.constexpr):
        """Which keys of a tile exist and are not padding: (BLOCK_N,) bool."""
        ok = cols < N_K
        if HAS_MASK:
            pad = tl.load(mask_ptr + b * mask_b_stride + cols * mask_n_stride, mask=ok, other=0)
            ok = ok & (pad != 0)
        return ok

    @triton.autotune(configs=_FWD_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune_fwd})
    @triton.heuristics(_NEEDS_MASK)
    @triton.jit
    def _attn_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, mask_ptr,
                         q_b_stride, q_h_stride, q_n_stride, q_d_stride,
                         k_b_stride, k_h_stride, k_n_stride, k_d_stride,
                         v_b_stride, v_h_stride, v_n_stride, v_d_stride,
                         o_b_stride, o_h_stride, o_n_stride, o_d_stride,
                         mask_b_stride, mask_n_stride,
                         H, N_Q, N_K, qk_scale,
                         HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
                         HAS_MASK: tl.constexpr, PRECISION: tl.constexpr, NEED_MASK: tl.constexpr,
                         STRIDE_ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """One program: BLOCK_M queries of one (batch, head), all keys in tiles of BLOCK_N, online softmax.
        The head dim is zero-padded to BLOCK_D, a power of two, by masked loads (d = 72 computes as 128)."""
        q_b_stride, q_h_stride, q_n_stride = _rescale(q_b_stride, q_h_stride, q_n_stride, STRIDE_ALIGN)
        k_b_stride, k_h_stride, k_n_stride = _rescale(k_b_stride, k_h_stride, k_n_stride, STRIDE_ALIGN)
        v_b_stride, v_h_stride, v_n_stride = _rescale(v_b_stride, v_h_stride, v_n_stride, STRIDE_ALIGN)
        o_b_stride, o_h_stride, o_n_stride = _rescale(o_b_stride, o_h_stride, o_n_stride, STRIDE_ALIGN)
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)  # 64-bit offsets: B*H*N*D may pass 2**31
        h = (bh % H).to(tl.int64)
        rows = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_DIM
        q_ok = (rows[:, None] < N_Q) & d_ok[None, :]
        q = tl.load(q_ptr + _tile(b, h, rows, offs_d, q_b_stride, q_h_stride, q_n_stride, q_d_stride),
                    mask=q_ok, other=0.0)  # (BLOCK_M, BLOCK_D)
        k_base = k_ptr + b * k_b_stride + h * k_h_stride
        v_base = v_ptr + b * v_b_stride + h * v_h_stride

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of the scores, log2 units
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp2(score - m_i)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum of exp2(score - m_i) * v

        hi = N_K
        if CAUSAL:
            hi = tl.minimum(N_K, start_m + BLOCK_M)  # key tiles past the diagonal contribute nothing
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            kt = tl.load(k_base + cols[None, :] * k_n_stride + offs_d[:, None] * k_d_stride,
                         mask=(cols[None, :] < N_K) & d_ok[:, None], other=0.0)  # (BLOCK_D, BLOCK_N)
            s = tl.dot(q, kt, input_precision=PRECISION)  # (BLOCK_M, BLOCK_N) = q.k, unscaled
            if NEED_MASK:  # (query rows past N_Q need no mask: they are computed on zeros and never stored)
                key_ok = _key_ok(mask_ptr, mask_b_stride, mask_n_stride, b, cols, N_K, HAS_MASK)
                s = tl.where(_keep(rows[:, None], cols[None, :], N_Q, key_ok[None, :], CAUSAL), s, float("-inf"))

            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)  # in log2 units: q.k * scale * log2 e
            m_safe = m_new
            if NEED_MASK:  # a row with no key yet has m = -inf: avoid -inf - -inf below
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)  # rescales what was summed under the old max
            p = tl.exp2(s * qk_scale - m_safe[:, None])  # (BLOCK_M, BLOCK_N); scale and shift in one FMA
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + cols[:, None] * v_n_stride + offs_d[None, :] * v_d_stride,
                        mask=(cols[:, None] < N_K) & d_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_D)
            # O += P V with the rescaled accumulator passed to the dot, which adds into it (acc=)
            acc = tl.dot(p.to(v.dtype), v, acc=acc * alpha[:, None], input_precision=PRECISION)
            m_i = m_new

        has_key = l_i > 0.0
        inv_l = 1.0 / tl.where(has_key, l_i, 1.0)  # rows that saw no key stay 0
        tl.store(o_ptr + _tile(b, h, rows, offs_d, o_b_stride, o_h_stride, o_n_stride, o_d_stride),
                 (acc * inv_l[:, None]).to(o_ptr.dtype.element_ty), mask=q_ok)
        # log-sum-exp in log2 units; +inf for an empty row makes every backward probability exp2(-inf) = 0
        lse = tl.where(has_key, m_i + tl.log2(tl.where(has_key, l_i, 1.0)), float("inf"))
        tl.store(lse_ptr + bh.to(tl.int64) * N_Q + rows, lse, mask=rows < N_Q)

    @triton.jit
    def _attn_bwd_delta_kernel(o_ptr, do_ptr, delta_ptr,
                               o_b_stride, o_h_stride, o_n_stride, o_d_stride,
                               do_b_stride, do_h_stride, do_n_stride, do_d_stride,
                               H, N_Q, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, STRIDE_ALIGN: tl.constexpr,
                               BLOCK_M: tl.constexpr):
        """Delta = rowsum(dO * O), (B, H, N) fp32: the term softmax's backward subtracts from every dP."""
        o_b_stride, o_h_stride, o_n_stride = _rescale(o_b_stride, o_h_stride, o_n_stride, STRIDE_ALIGN)
        do_b_stride, do_h_stride, do_n_stride = _rescale(do_b_stride, do_h_stride, do_n_stride, STRIDE_ALIGN)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        ok = (rows[:, None] < N_Q) & (offs_d[None, :] < HEAD_DIM)
        o = tl.load(o_ptr + _tile(b, h, rows, offs_d, o_b_stride, o_h_stride, o_n_stride, o_d_stride),
                    mask=ok, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + _tile(b, h, rows, offs_d, do_b_stride, do_h_stride, do_n_stride, do_d_stride),
                     mask=ok, other=0.0).to(tl.float32)
        tl.store(delta_ptr + bh.to(tl.int64) * N_Q + rows, tl.sum(o * do, 1), mask=rows < N_Q)

    @triton.autotune(configs=_DKDV_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune_dkdv})
    @triton.heuristics(_NEEDS_MASK)
    @triton.jit
    def _attn_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, mask_ptr, dk_ptr, dv_ptr,
                              q_b_stride, q_h_stride, q_n_stride, q_d_stride,
                              k_b_stride, k_h_stride, k_n_stride, k_d_stride,
                              v_b_stride, v_h_stride, v_n_stride, v_d_stride,
                              do_b_stride, do_h_stride, do_n_stride, do_d_stride,
                              dk_b_stride, dk_h_stride, dk_n_stride, dk_d_stride,
                              mask_b_stride, mask_n_stride,
                              H, N_Q, N_K, qk_scale, sm_scale,
                              HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
                              HAS_MASK: tl.constexpr, PRECISION: tl.constexpr, NEED_MASK: tl.constexpr,
                              STRIDE_ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """One program: BLOCK_N keys of one (batch, head); walks over query tiles, accumulates dK and dV.
        dK and dV are contiguous tensors of k's shape, so they share `dk_*_stride`."""
        q_b_stride, q_h_stride, q_n_stride = _rescale(q_b_stride, q_h_stride, q_n_stride, STRIDE_ALIGN)
        k_b_stride, k_h_stride, k_n_stride = _rescale(k_b_stride, k_h_stride, k_n_stride, STRIDE_ALIGN)
        v_b_stride, v_h_stride, v_n_stride = _rescale(v_b_stride, v_h_stride, v_n_stride, STRIDE_ALIGN)
        do_b_stride, do_h_stride, do_n_stride = _rescale(do_b_stride, do_h_stride, do_n_stride, STRIDE_ALIGN)
        dk_b_stride, dk_h_stride, dk_n_stride = _rescale(dk_b_stride, dk_h_stride, dk_n_stride, STRIDE_ALIGN)
        start_n = tl.program_id(0) * BLOCK_N
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        cols = start_n + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_DIM
        kv_ok = (cols[:, None] < N_K) & d_ok[None, :]
        k = tl.load(k_ptr + _tile(b, h, cols, offs_d, k_b_stride, k_h_stride, k_n_stride, k_d_stride),
                    mask=kv_ok, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_ptr + _tile(b, h, cols, offs_d, v_b_stride, v_h_stride, v_n_stride, v_d_stride),
                    mask=kv_ok, other=0.0)  # (BLOCK_N, BLOCK_D)
        key_ok = _key_ok(mask_ptr, mask_b_stride, mask_n_stride, b, cols, N_K, HAS_MASK)
        q_base = q_ptr + b * q_b_stride + h * q_h_stride
        do_base = do_ptr + b * do_b_stride + h * do_h_stride
        row_base = bh.to(tl.int64) * N_Q

        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        lo = 0
        if CAUSAL:
            lo = (start_n // BLOCK_M) * BLOCK_M  # queries before this key tile never see it
        for start_m in range(lo, N_Q, BLOCK_M):
            rows = start_m + offs_m
            row_ok = rows < N_Q
            qt = tl.load(q_base + rows[None, :] * q_n_stride + offs_d[:, None] * q_d_stride,
                         mask=row_ok[None, :] & d_ok[:, None], other=0.0)  # (BLOCK_D, BLOCK_M)
            do = tl.load(do_base + rows[:, None] * do_n_stride + offs_d[None, :] * do_d_stride,
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
            lse = tl.load(lse_ptr + row_base + rows, mask=row_ok, other=0.0)
            delta = tl.load(delta_ptr + row_base + rows, mask=row_ok, other=0.0)

            st = tl.dot(k, qt, input_precision=PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M), log2 units
            if NEED_MASK:
                keep = _keep(rows[None, :], cols[:, None], N_Q, key_ok[:, None], CAUSAL)  # (BLOCK_N, BLOCK_M)
                st = tl.where(keep, st, float("-inf"))
            pt = tl.exp2(st - lse[None, :])  # P^T, exactly the forward's P
            dv = tl.dot(pt.to(do.dtype), do, acc=dv, input_precision=PRECISION)  # dV += P^T dO
            dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M) = (dO V^T)^T
            dst = pt * (dpt - delta[None, :])  # dS = P * (dP - Delta), softmax's backward
            dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), acc=dk, input_precision=PRECISION)  # dK += dS^T Q

        dk = dk * sm_scale
        out = _tile(b, h, cols, offs_d, dk_b_stride, dk_h_stride, dk_n_stride, dk_d_stride)
        tl.store(dk_ptr + out, dk.to(dk_ptr.dtype.element_ty), mask=kv_ok)
        tl.store(dv_ptr + out, dv.to(dv_ptr.dtype.element_ty), mask=kv_ok)

    @triton.autotune(configs=_DQ_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune_dq})
    @triton.heuristics(_NEEDS_MASK)
    @triton.jit
    def _attn_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, mask_ptr, dq_ptr,
                            q_b_stride, q_h_stride, q_n_stride, q_d_stride,
                            k_b_stride, k_h_stride, k_n_stride, k_d_stride,
                            v_b_stride, v_h_stride, v_n_stride, v_d_stride,
                            do_b_stride, do_h_stride, do_n_stride, do_d_stride,
                            dq_b_stride, dq_h_stride, dq_n_stride, dq_d_stride,
                            mask_b_stride, mask_n_stride,
                            H, N_Q, N_K, qk_scale, sm_scale,
                            HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
                            HAS_MASK: tl.constexpr, PRECISION: tl.constexpr, NEED_MASK: tl.constexpr,
                            STRIDE_ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """One program: BLOCK_M queries of one (batch, head); walks over key tiles, accumulates dQ."""
        q_b_stride, q_h_stride, q_n_stride = _rescale(q_b_stride, q_h_stride, q_n_stride, STRIDE_ALIGN)
        k_b_stride, k_h_stride, k_n_stride = _rescale(k_b_stride, k_h_stride, k_n_stride, STRIDE_ALIGN)
        v_b_stride, v_h_stride, v_n_stride = _rescale(v_b_stride, v_h_stride, v_n_stride, STRIDE_ALIGN)
        do_b_stride, do_h_stride, do_n_stride = _rescale(do_b_stride, do_h_stride, do_n_stride, STRIDE_ALIGN)
        dq_b_stride, dq_h_stride, dq_n_stride = _rescale(dq_b_stride, dq_h_stride, dq_n_stride, STRIDE_ALIGN)
        start_m = tl.program_id(0) * BLOCK_M
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        rows = start_m + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_DIM
        q_ok = (rows[:, None] < N_Q) & d_ok[None, :]
        q = tl.load(q_ptr + _tile(b, h, rows, offs_d, q_b_stride, q_h_stride, q_n_stride, q_d_stride),
                    mask=q_ok, other=0.0)  # (BLOCK_M, BLOCK_D)
        do = tl.load(do_ptr + _tile(b, h, rows, offs_d, do_b_stride, do_h_stride, do_n_stride, do_d_stride),
                     mask=q_ok, other=0.0)  # (BLOCK_M, BLOCK_D)
        row_base = bh.to(tl.int64) * N_Q
        lse = tl.load(lse_ptr + row_base + rows, mask=rows < N_Q, other=0.0)
        delta = tl.load(delta_ptr + row_base + rows, mask=rows < N_Q, other=0.0)
        k_base = k_ptr + b * k_b_stride + h * k_h_stride
        v_base = v_ptr + b * v_b_stride + h * v_h_stride

        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        hi = N_K
        if CAUSAL:
            hi = tl.minimum(N_K, start_m + BLOCK_M)
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            key_ok = _key_ok(mask_ptr, mask_b_stride, mask_n_stride, b, cols, N_K, HAS_MASK)
            kv_ok = (cols[None, :] < N_K) & d_ok[:, None]
            kt = tl.load(k_base + cols[None, :] * k_n_stride + offs_d[:, None] * k_d_stride,
                         mask=kv_ok, other=0.0)  # (BLOCK_D, BLOCK_N)
            vt = tl.load(v_base + cols[None, :] * v_n_stride + offs_d[:, None] * v_d_stride,
                         mask=kv_ok, other=0.0)  # (BLOCK_D, BLOCK_N)
            s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
            if NEED_MASK:
                keep = _keep(rows[:, None], cols[None, :], N_Q, key_ok[None, :], CAUSAL)  # (BLOCK_M, BLOCK_N)
                s = tl.where(keep, s, float("-inf"))
            p = tl.exp2(s - lse[:, None])
            dp = tl.dot(do, vt, input_precision=PRECISION)  # (BLOCK_M, BLOCK_N) = dO V^T
            ds = p * (dp - delta[:, None])
            dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), acc=dq, input_precision=PRECISION)  # dQ += dS K

        dq = dq * sm_scale
        tl.store(dq_ptr + _tile(b, h, rows, offs_d, dq_b_stride, dq_h_stride, dq_n_stride, dq_d_stride),
                 dq.to(dq_ptr.dtype.element_ty), mask=q_ok)


# ---------------------------------------------------------------------------------------------------------------
# 3. Host functions: allocate, pick compile-time sizes, launch


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))  # tl.dot needs >= 16 along the reduced dimension


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact IEEE products so the CPU interpreter and the GPU agree (tests); fp16/bf16 ignore it
    return "ieee" if dtype == torch.float32 else "tf32"


def _stride_align(*tensors) -> int:
    """The largest power of two up to 16 that divides every batch, head and row stride of `tensors`.

    Triton learns on its own only whether an integer argument is divisible by 16. DiT-XL's rows of d = 72 have a
    stride of 72, divisible by 8 (16 bytes in bf16) but not 16, and without knowing it the compiler can neither
    vectorise the loads nor pipeline them: compiled for sm_90, the forward at d = 72 had no asynchronous copies at all
    and spilled registers, while with the strides' divisibility known it pipelines like d = 64
    (`python scripts/kernel_resources.py`). `tl.multiple_of` on a scalar argument did not change that; passing the
    strides divided by this number and multiplying them back by it as a compile-time constant (`_rescale`) does.

    The strides of size-1 dimensions never reach an address, so they do not count (`_strides` passes 0 for them).
    A stride of 2**31 or more gives 1: Triton passes such an integer as 64-bit, but divided it would arrive as 32-bit
    and the multiplication back would wrap."""
    align = 16
    for t in tensors:
        for size, stride in zip(t.shape[:3], t.stride()[:3]):
            if size == 1:
                continue
            if stride >= 2 ** 31:
                return 1
            while stride % align:
                align //= 2
    return align


def _strides(align, *tensors):
    """The launch's stride arguments: each tensor's batch, head and row strides divided by `align` (0 for a size-1
    dimension, whose index is always 0), and its head-dim stride as it is."""
    args = []
    for t in tensors:
        args += [stride // align if size > 1 else 0 for size, stride in zip(t.shape[:3], t.stride()[:3])]
        args.append(t.stride(3))
    return args


def _mask_args(mask_u8, q):
    """Pointer and strides for the key-padding mask; a dummy pointer when there is none."""
    if mask_u8 is None:
        return q, 0, 0
    return mask_u8, mask_u8.stride(0), mask_u8.stride(1)


def _flash_forward(q, k, v, causal, mask_u8, scale):
    B, H, N, D = q.shape
    M = k.shape[2]
    o = torch.empty((B, H, N, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, N), dtype=torch.float32, device=q.device)
    mask_arg, mask_b_stride, mask_n_stride = _mask_args(mask_u8, q)
    align = _stride_align(q, k, v, o)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H)  # noqa: E731
    _attn_fwd_kernel[grid](q, k, v, o, lse, mask_arg, *_strides(align, q, k, v, o),
                           mask_b_stride, mask_n_stride, H, N, M, scale * LOG2E,
                           HEAD_DIM=D, BLOCK_D=_block_d(D), CAUSAL=causal,
                           HAS_MASK=mask_u8 is not None, PRECISION=_precision(q.dtype), STRIDE_ALIGN=align)
    return o, lse


def _flash_backward(do, q, k, v, o, lse, causal, mask_u8, scale):
    B, H, N, D = q.shape
    M = k.shape[2]
    block_d = _block_d(D)
    dq = torch.empty((B, H, N, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, M, D), dtype=k.dtype, device=q.device)
    dv = torch.empty((B, H, M, D), dtype=v.dtype, device=q.device)
    align = _stride_align(q, k, v, o, do, dq, dk)  # (dv is made like dk: the dK/dV kernel gives both dk's strides)
    delta = torch.empty((B, H, N), dtype=torch.float32, device=q.device)
    _attn_bwd_delta_kernel[(triton.cdiv(N, 64), B * H)](o, do, delta, *_strides(align, o, do), H, N,
                                                         HEAD_DIM=D, BLOCK_D=block_d, STRIDE_ALIGN=align, BLOCK_M=64)
    mask_arg, mask_b_stride, mask_n_stride = _mask_args(mask_u8, q)
    common = dict(HEAD_DIM=D, BLOCK_D=block_d, CAUSAL=causal, HAS_MASK=mask_u8 is not None,
                  PRECISION=_precision(q.dtype), STRIDE_ALIGN=align)
    grid_kv = lambda meta: (triton.cdiv(M, meta["BLOCK_N"]), B * H)  # noqa: E731
    _attn_bwd_dkdv_kernel[grid_kv](q, k, v, do, lse, delta, mask_arg, dk, dv, *_strides(align, q, k, v, do, dk),
                                   mask_b_stride, mask_n_stride, H, N, M, scale * LOG2E, scale, **common)
    grid_q = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H)  # noqa: E731
    _attn_bwd_dq_kernel[grid_q](q, k, v, do, lse, delta, mask_arg, dq, *_strides(align, q, k, v, do, dq),
                                mask_b_stride, mask_n_stride, H, N, M, scale * LOG2E, scale, **common)
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------------------------
# 4. Autograd


class FlashAttention(torch.autograd.Function):
    """Triton forward and backward; saves q, k, v, o and the per-row log-sum-exp (not the N x M matrix)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, mask_u8, scale):
        o, lse = _flash_forward(q, k, v, causal, mask_u8, scale)
        ctx.save_for_backward(q, k, v, o, lse, mask_u8)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, mask_u8 = ctx.saved_tensors
        dq, dk, dv = _flash_backward(do, q, k, v, o, lse, ctx.causal, mask_u8, ctx.scale)
        return dq, dk, dv, None, None, None


# ---------------------------------------------------------------------------------------------------------------
# 5. Dispatcher


def _check_inputs(q, k, v, causal, key_padding_mask, scale):
    op = "attention"
    check_tensor(op, "q", q, ndim=4)
    B, H, N, D = q.shape
    check_tensor(op, "k", k, ndim=4, shape=(B, H, None, D), like=q)
    check_tensor(op, "v", v, shape=tuple(k.shape), like=q)
    if key_padding_mask is not None:
        check_tensor(op, "key_padding_mask", key_padding_mask, shape=(B, k.shape[2]), floating=False)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"{op}: key_padding_mask must be bool (True = keep), got {key_padding_mask.dtype}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"{op}: key_padding_mask is on {key_padding_mask.device} but q is on {q.device}")
    if not isinstance(causal, bool):
        raise TypeError(f"{op}: causal must be a bool, got {type(causal).__name__}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"{op}: scale must be a positive number or None, got {scale!r}")


def attention(q, k, v, *, causal=False, key_padding_mask=None, scale=None, backend=None):
    """softmax(q k^T * scale) v over (B, H, N, D) tensors; see the module docstring for arguments and backends."""
    _check_inputs(q, k, v, causal, key_padding_mask, scale)
    scale = float(q.shape[-1] ** -0.5 if scale is None else scale)
    which = choose_backend("attention", backend, q.device, fallback="sdpa", training=records_grad(q, k, v))
    which = within_triton_limits("attention", which, backend, [("head dim D", q.shape[-1], MAX_TRITON_HEAD_DIM)])
    if which == "reference":
        return attention_reference(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale)
    if which == "sdpa":
        return _attention_sdpa(q, k, v, causal, key_padding_mask, scale)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_kernel_dtype("attention", name, t)
    mask_u8 = None if key_padding_mask is None else key_padding_mask.view(torch.uint8)
    return FlashAttention.apply(q, k, v, causal, mask_u8, scale)


def attention_flops(B: int, H: int, N: int, M: int, D: int, *, causal: bool = False, backward: bool = False) -> float:
    """Floating-point operations, counted as the FlashAttention papers do: two matmuls (Q K^T and P V) of
    2*N*M*D each per head forward; the backward has five such matmuls, i.e. 2.5x the forward, so fwd+bwd is 3.5x.
    Causal attention does about half the work."""
    flops = 4.0 * B * H * N * M * D
    if causal:
        flops /= 2
    return flops * (3.5 if backward else 1.0)


__all__ = ["attention", "attention_reference", "attention_flops", "FlashAttention", "LOG2E"]
