"""Temporal attention: attention across the T frames of a video for every spatial position, read in place.

Factorized video transformers attend within a frame (over the S spatial tokens) and then across frames (over T, once
for every spatial position): Arnab et al., "ViViT" (arXiv 2103.15691, the factorized self-attention of model 3) and
Bertasius et al., "TimeSformer" (arXiv 2102.05095, divided space-time attention). The activations live as
(B, T, S, H, D), so the temporal step is B*S*H independent attention problems of T queries over T keys whose rows
lie a frame stride apart. In PyTorch that is permute to (B, S, H, T, D), attention, permute back (whatever copies
SDPA makes of the permuted views inside); the kernel here reads q, k, v and writes the output by their strides,
with no permute and no copy. T is small (8..32 frames in video models), so one program keeps all T queries of one
(b, s, h) in registers and walks over the keys in tiles with an online softmax (FlashAttention-2, Dao, arXiv
2307.08691); it saves the log-sum-exp per query, and the backward recomputes the probabilities from it, with the
whole T x T tile at once (dq, dk and dv in one program).

Public API (the models call it through `minigen.nn`):

    temporal_attention(q, k, v, *, causal=False, scale=None, backend=None) -> (B, T, S, H, D)
    temporal_attention_reference(q, k, v, *, causal=False, scale=None, backend=None)
    temporal_attention_flops(B, T, S, H, D, *, causal=False, backward=False) -> float

    q, k, v    (B, T, S, H, D), any strides: typically views of one qkv projection, qkv[:, :, :, i] of a
               (B, T, S, 3, H, D) tensor. D (head dim) <= 128 (padded to 16 at least) and T <= 128 for the Triton
               kernel; any for the others
    causal     frame t sees frames <= t
    scale      multiplies q.k; default 1/sqrt(D)
    backend    None (choose), "triton", "sdpa" or "reference"; see `minigen.kernels._dispatch`. Until a GPU
               measurement says otherwise (`_dispatch.TRITON_WINS`), None picks "sdpa" everywhere: permute ->
               `torch.nn.functional.scaled_dot_product_attention` -> permute

The Triton path returns a new contiguous (B, T, S, H, D) tensor; "sdpa" and "reference" return the permuted view of
theirs (same shape, other strides).

Order of this file (DESIGN section 5): the reference (and the SDPA version); the Triton kernels (forward, backward);
the host functions; the autograd.Function; the dispatcher and the FLOP count.
"""
import torch
import torch.nn.functional as F

from ._dispatch import check_kernel_dtype, check_tensor, choose_backend, records_grad, triton, tl, within_triton_limits
from .flash_attention import LOG2E, attention_flops

MAX_TRITON_HEAD_DIM = 128
MAX_TRITON_FRAMES = 128  # all T queries (and in the backward the whole T x T tile) stay in one program's registers

_TO_HEADS = (0, 2, 3, 1, 4)  # (B, T, S, H, D) -> (B, S, H, T, D): one attention problem per (b, s, h)
_FROM_HEADS = (0, 3, 1, 2, 4)  # and back


# ---------------------------------------------------------------------------------------------------------------
# 1. Reference: permute, the whole T x T score matrix, permute back


def temporal_attention_reference(q, k, v, *, causal=False, scale=None, backend=None):
    """softmax(q k^T * scale) v across T for every (b, s, h), in plain PyTorch. Matmuls run in q's dtype, softmax
    in fp32. Returns a (B, T, S, H, D) view of a (B, S, H, T, D) result.

    `backend` is accepted and ignored so the signature matches `temporal_attention`.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = (t.permute(_TO_HEADS) for t in (q, k, v))  # (B, S, H, T, D)
    s = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, S, H, T, D) @ (B, S, H, D, T) -> (B, S, H, T, T)
    if causal:
        T = q.shape[-2]
        later = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # key frame after the query frame
        s = s.masked_fill(later, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(q.dtype)  # (B, S, H, T, T)
    return torch.matmul(p, v).permute(_FROM_HEADS)  # (B, S, H, T, D) -> (B, T, S, H, D)


def _temporal_sdpa(q, k, v, causal, scale):
    """permute -> PyTorch's fused attention -> permute: the fallback, and what the benchmark compares against."""
    q, k, v = (t.permute(_TO_HEADS) for t in (q, k, v))  # (B, S, H, T, D); SDPA takes any number of batch dims
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale).permute(_FROM_HEADS)


# ---------------------------------------------------------------------------------------------------------------
# 2. Triton kernels (defined only when triton imports)

if triton is not None:

    @triton.jit
    def _frames(base_ptr, b, t, s, h, offs_d, b_stride, t_stride, s_stride, h_stride, d_stride):
        """Pointers to the (len(t), BLOCK_D) tile of frames `t` at spatial position s, head h, batch b, by strides.
        `t` comes already broadcastable: t[:, None] with offs_d[None, :] for (frames, D), the other way round for
        its transpose. All offsets are 64-bit: a video's frame stride times T can pass 2**31."""
        return base_ptr + b * b_stride + s * s_stride + h * h_stride + t.to(tl.int64) * t_stride + offs_d * d_stride

    @triton.jit
    def _temporal_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
                             q_b_stride, q_t_stride, q_s_stride, q_h_stride, q_d_stride,
                             k_b_stride, k_t_stride, k_s_stride, k_h_stride, k_d_stride,
                             v_b_stride, v_t_stride, v_s_stride, v_h_stride, v_d_stride,
                             o_b_stride, o_t_stride, o_s_stride, o_h_stride, o_d_stride,
                             S, H, T, qk_scale,
                             HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
                             BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
        """One program: one (spatial position, batch, head); all T queries (zero-padded to BLOCK_T rows) over the
        keys in tiles of BLOCK_N frames, online softmax. Saves the log-sum-exp per query, in log2 units, to lse
        (B, H, S, T) fp32. (Four spatial positions per program, in a loop, were tried: compiled for sm_90 that took
        137 registers per thread against 80 for one position at T = 16, D = 64, and spilled at T = 32.)"""
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        rows = tl.arange(0, BLOCK_T)  # query frames
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_DIM
        q_ok = (rows[:, None] < T) & d_ok[None, :]
        s = tl.program_id(0).to(tl.int64)
        q = tl.load(_frames(q_ptr, b, rows[:, None], s, h, offs_d[None, :],
                            q_b_stride, q_t_stride, q_s_stride, q_h_stride, q_d_stride),
                    mask=q_ok, other=0.0)  # (BLOCK_T, BLOCK_D)
        m_i = tl.full([BLOCK_T], float("-inf"), tl.float32)  # running max of the scores, log2 units
        l_i = tl.zeros([BLOCK_T], tl.float32)  # running sum of exp2(score - m_i)
        acc = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)  # running sum of exp2(score - m_i) * v
        for start_n in range(0, T, BLOCK_N):
            cols = start_n + offs_n  # key frames
            kt = tl.load(_frames(k_ptr, b, cols[None, :], s, h, offs_d[:, None],
                                 k_b_stride, k_t_stride, k_s_stride, k_h_stride, k_d_stride),
                         mask=(cols[None, :] < T) & d_ok[:, None], other=0.0)  # (BLOCK_D, BLOCK_N)
            v = tl.load(_frames(v_ptr, b, cols[:, None], s, h, offs_d[None, :],
                                v_b_stride, v_t_stride, v_s_stride, v_h_stride, v_d_stride),
                        mask=(cols[:, None] < T) & d_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_D)
            scores = tl.dot(q, kt, input_precision=PRECISION)  # (BLOCK_T, BLOCK_N) = q.k, unscaled
            keep = cols[None, :] < T
            if CAUSAL:
                keep = keep & (rows[:, None] >= cols[None, :])
            scores = tl.where(keep, scores, float("-inf"))
            # every row (padding rows too) sees key frame 0 in the first tile, so m_new is finite from there
            m_new = tl.maximum(m_i, tl.max(scores, 1) * qk_scale)  # log2 units: q.k * scale * log2 e
            alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max (0 at first)
            p = tl.exp2(scores * qk_scale - m_new[:, None])  # (BLOCK_T, BLOCK_N)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = tl.dot(p.to(v.dtype), v, acc=acc * alpha[:, None], input_precision=PRECISION)
            m_i = m_new
        tl.store(_frames(o_ptr, b, rows[:, None], s, h, offs_d[None, :],
                         o_b_stride, o_t_stride, o_s_stride, o_h_stride, o_d_stride),
                 (acc / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=q_ok)
        tl.store(lse_ptr + (bh.to(tl.int64) * S + s) * T + rows, m_i + tl.log2(l_i), mask=rows < T)

    @triton.jit
    def _temporal_bwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr,
                             q_b_stride, q_t_stride, q_s_stride, q_h_stride, q_d_stride,
                             k_b_stride, k_t_stride, k_s_stride, k_h_stride, k_d_stride,
                             v_b_stride, v_t_stride, v_s_stride, v_h_stride, v_d_stride,
                             o_b_stride, o_t_stride, o_s_stride, o_h_stride, o_d_stride,
                             do_b_stride, do_t_stride, do_s_stride, do_h_stride, do_d_stride,
                             dq_b_stride, dq_t_stride, dq_s_stride, dq_h_stride, dq_d_stride,
                             S, H, T, qk_scale, sm_scale,
                             HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
                             CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
        """One program: one (spatial position, batch, head), the whole (BLOCK_T, BLOCK_T) tile at once:
        P recomputed from the saved log-sum-exp, Delta = rowsum(dO * O), then dV = P^T dO, dS = P * (dO V^T - Delta),
        dQ = dS K * scale, dK = dS^T Q * scale. dO is read by its strides (all 0 after out.sum().backward() is
        fine). dQ, dK and dV are new contiguous tensors of q's shape, so they share `dq_*_stride`."""
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        rows = tl.arange(0, BLOCK_T)  # frames, as queries (rows of S) and as keys (columns)
        offs_d = tl.arange(0, BLOCK_D)
        ok = (rows[:, None] < T) & (offs_d[None, :] < HEAD_DIM)
        keep = rows[None, :] < T  # (1, BLOCK_T): key frames that exist
        if CAUSAL:
            keep = keep & (rows[:, None] >= rows[None, :])
        s = tl.program_id(0).to(tl.int64)
        q = tl.load(_frames(q_ptr, b, rows[:, None], s, h, offs_d[None, :],
                            q_b_stride, q_t_stride, q_s_stride, q_h_stride, q_d_stride), mask=ok, other=0.0)
        k = tl.load(_frames(k_ptr, b, rows[:, None], s, h, offs_d[None, :],
                            k_b_stride, k_t_stride, k_s_stride, k_h_stride, k_d_stride), mask=ok, other=0.0)
        v = tl.load(_frames(v_ptr, b, rows[:, None], s, h, offs_d[None, :],
                            v_b_stride, v_t_stride, v_s_stride, v_h_stride, v_d_stride), mask=ok, other=0.0)
        o = tl.load(_frames(o_ptr, b, rows[:, None], s, h, offs_d[None, :],
                            o_b_stride, o_t_stride, o_s_stride, o_h_stride, o_d_stride), mask=ok, other=0.0)
        do = tl.load(_frames(do_ptr, b, rows[:, None], s, h, offs_d[None, :],
                             do_b_stride, do_t_stride, do_s_stride, do_h_stride, do_d_stride),
                     mask=ok, other=0.0)  # (BLOCK_T, BLOCK_D), like q, k, v and o
        # +inf for padding rows makes their probabilities exp2(-inf) = 0
        lse = tl.load(lse_ptr + (bh.to(tl.int64) * S + s) * T + rows, mask=rows < T, other=float("inf"))
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # (BLOCK_T,): softmax's backward term

        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_T, BLOCK_T), log2
        p = tl.exp2(tl.where(keep, scores, float("-inf")) - lse[:, None])  # exactly the forward's P
        dv = tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)  # P^T dO
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # dO V^T
        ds = p * (dp - delta[:, None])  # dS = P * (dP - Delta)
        dq = tl.dot(ds.to(k.dtype), k, input_precision=PRECISION) * sm_scale  # dS K
        dk = tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION) * sm_scale  # dS^T Q

        out_offsets = _frames(0, b, rows[:, None], s, h, offs_d[None, :],
                              dq_b_stride, dq_t_stride, dq_s_stride, dq_h_stride, dq_d_stride)
        tl.store(dq_ptr + out_offsets, dq.to(dq_ptr.dtype.element_ty), mask=ok)
        tl.store(dk_ptr + out_offsets, dk.to(dk_ptr.dtype.element_ty), mask=ok)
        tl.store(dv_ptr + out_offsets, dv.to(dv_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------------------------------
# 3. Host functions: allocate, pick compile-time sizes, launch


def _block_t(frames: int) -> int:
    return max(16, triton.next_power_of_2(frames))  # tl.dot needs >= 16 along every dimension


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _num_warps(block_t: int) -> int:
    """Compiled for sm_90 (bf16, `minigen.kernels.compile_check`): with 4 warps neither kernel spills up to
    T = 32 at any head dim <= 128 (the backward at T = 32, D = 128: 150 registers per thread); from T = 64 on the
    backward needs 8 (at 4 it spills at D = 64) and still spills at D = 128 and at T = 128; the forward with these
    never spills (T = 128, D = 128: 252 registers)."""
    return 4 if block_t <= 32 else 8


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact IEEE products so the CPU interpreter and the GPU agree (tests); fp16/bf16 ignore it
    return "ieee" if dtype == torch.float32 else "tf32"


def _temporal_forward(q, k, v, causal, scale):
    B, T, S, H, D = q.shape
    o = torch.empty((B, T, S, H, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, S, T), dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, lse
    block_t, block_d = _block_t(T), _block_d(D)
    # one program per (s, b*h); strides as they are, in elements (a stride-0 or size-1 dimension is fine)
    _temporal_fwd_kernel[(S, B * H)](q, k, v, o, lse, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
                                     S, H, T, scale * LOG2E,
                                     HEAD_DIM=D, BLOCK_D=block_d, BLOCK_T=block_t, BLOCK_N=min(block_t, 64),
                                     CAUSAL=causal, PRECISION=_precision(q.dtype), num_warps=_num_warps(block_t))
    return o, lse


def _temporal_backward(do, q, k, v, o, lse, causal, scale):
    B, T, S, H, D = q.shape
    dq, dk, dv = (torch.empty((B, T, S, H, D), dtype=q.dtype, device=q.device) for _ in range(3))
    if dq.numel() == 0:
        return dq, dk, dv
    block_t, block_d = _block_t(T), _block_d(D)
    _temporal_bwd_kernel[(S, B * H)](q, k, v, o, do, lse, dq, dk, dv,
                                     *q.stride(), *k.stride(), *v.stride(), *o.stride(), *do.stride(), *dq.stride(),
                                     S, H, T, scale * LOG2E, scale,
                                     HEAD_DIM=D, BLOCK_D=block_d, BLOCK_T=block_t, CAUSAL=causal,
                                     PRECISION=_precision(q.dtype), num_warps=_num_warps(block_t))
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------------------------
# 4. Autograd


class TemporalAttention(torch.autograd.Function):
    """Triton forward and backward; saves q, k, v (the caller's views, no copies), o and the per-query log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale):
        o, lse = _temporal_forward(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _temporal_backward(do, q, k, v, o, lse, ctx.causal, ctx.scale)
        return dq, dk, dv, None, None


# ---------------------------------------------------------------------------------------------------------------
# 5. Dispatcher


def _check_inputs(q, k, v, causal, scale):
    op = "temporal_attention"
    check_tensor(op, "q", q)
    if q.dim() != 5:
        raise ValueError(f"{op}: q must have 5 dimensions, expected (B, T, S, H, D), got shape {tuple(q.shape)}")
    check_tensor(op, "k", k, shape=tuple(q.shape), like=q)
    check_tensor(op, "v", v, shape=tuple(q.shape), like=q)
    if not isinstance(causal, bool):
        raise TypeError(f"{op}: causal must be a bool, got {type(causal).__name__}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"{op}: scale must be a positive number or None, got {scale!r}")


def temporal_attention(q, k, v, *, causal=False, scale=None, backend=None):
    """softmax(q k^T * scale) v across T for every (b, s, h) of (B, T, S, H, D) tensors; see the module docstring for
    arguments and backends."""
    _check_inputs(q, k, v, causal, scale)
    scale = float(q.shape[-1] ** -0.5 if scale is None else scale)
    which = choose_backend("temporal_attention", backend, q.device, fallback="sdpa", training=records_grad(q, k, v))
    which = within_triton_limits("temporal_attention", which, backend,
                                 [("head dim D", q.shape[-1], MAX_TRITON_HEAD_DIM), ("T", q.shape[1], MAX_TRITON_FRAMES)])
    if which == "reference":
        return temporal_attention_reference(q, k, v, causal=causal, scale=scale)
    if which == "sdpa":
        return _temporal_sdpa(q, k, v, causal, scale)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_kernel_dtype("temporal_attention", name, t)
    return TemporalAttention.apply(q, k, v, causal, scale)


def temporal_attention_flops(B: int, T: int, S: int, H: int, D: int, *, causal: bool = False,
                             backward: bool = False) -> float:
    """Floating-point operations, counted as `attention_flops` counts them for B*S*H problems of T queries over T
    keys: two matmuls (Q K^T and P V) of 2*T*T*D each forward; forward+backward 3.5x that; causal about half."""
    return attention_flops(B * S, H, T, T, D, causal=causal, backward=backward)


__all__ = ["temporal_attention", "temporal_attention_reference", "temporal_attention_flops", "TemporalAttention"]
