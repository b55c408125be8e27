"""Fused normalisations: LayerNorm + adaLN modulate (DiT) and GroupNorm + SiLU (U-Net), forward and backward.

Both are memory-bound: a handful of flops per element, so the time is the bytes moved. Unfused, PyTorch reads
and writes the activation once per op (norm, multiply, add, SiLU); fused, each kernel reads x once and writes y
once (GroupNorm reads x a second time for its statistics, which an on-chip cache mostly serves).

Public API (the models call these through `minigen.nn`):

    layernorm_modulate(x, shift, scale, *, eps=1e-6, backend=None) -> (B, N, C)
        LN(x) * (1 + scale) + shift, LayerNorm without affine parameters as in DiT (Peebles & Xie, arXiv 2212.09748);
        x (B, N, C); shift, scale (B, C), one vector per sample from the conditioning.
    gated_residual(x, y, gate, *, backend=None) -> (B, N, C)
        x + gate * y, DiT's gated residual; x, y (B, N, C), gate (B, C).
    groupnorm_silu(x, num_groups, weight, bias, *, eps=1e-5, backend=None) -> (B, C, H, W)
        SiLU(GroupNorm(x)); weight, bias (C,) or None.
    ..._reference(...) with the same signatures, in plain PyTorch.

`backend` is None (Triton on CUDA where it can run, else the reference), "triton" or "reference";
see `minigen.kernels._dispatch`.
"""
import math

import torch
import torch.nn.functional as F

from ._dispatch import (check_kernel_dtype, check_tensor, choose_backend, interpreting, quick_autotune, records_grad,
                        triton, tl)

MAX_BLOCK = 16384  # largest row (LayerNorm: C) a program keeps in registers


# ---------------------------------------------------------------------------------------------------------------
# 1. References


def layernorm_modulate_reference(x, shift, scale, *, eps=1e-6, backend=None):
    """LN(x) * (1 + scale) + shift in x's dtype (F.layer_norm accumulates in fp32 internally)."""
    # x (B, N, C); shift, scale (B, C) -> (B, 1, C) broadcast over the N tokens
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def gated_residual_reference(x, y, gate, *, backend=None):
    """x + gate * y: DiT's residual branch, scaled per sample and channel (gate starts at zero: adaLN-Zero)."""
    return x + gate.unsqueeze(1) * y  # (B, N, C) + (B, 1, C) * (B, N, C)


def groupnorm_silu_reference(x, num_groups, weight, bias, *, eps=1e-5, backend=None):
    """SiLU(GroupNorm(x)) over x (B, C, H, W)."""
    return F.silu(F.group_norm(x, num_groups, weight, bias, eps))


# ---------------------------------------------------------------------------------------------------------------
# 2. Triton kernels (defined only when triton imports)

if triton is not None:

    @triton.jit
    def _ln_modulate_fwd_kernel(x_ptr, shift_ptr, scale_ptr, y_ptr, mean_ptr, rstd_ptr,
                                shift_b_stride, scale_b_stride, N, C, eps,
                                BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """One program: BLOCK_R rows (tokens) of sample b; x and y are contiguous (B, N, C)."""
        b = tl.program_id(0).to(tl.int64)
        rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_C)
        col_ok = cols < C
        ok = (rows[:, None] < N) & col_ok[None, :]
        offs = (b * N + rows[:, None]) * C + cols[None, :]
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_C)
        mean = tl.sum(x, 1) / C
        xc = tl.where(ok, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / C + eps)
        shift = tl.load(shift_ptr + b * shift_b_stride + cols, mask=col_ok, other=0.0).to(tl.float32)
        scale = tl.load(scale_ptr + b * scale_b_stride + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = xc * rstd[:, None] * (1.0 + scale[None, :]) + shift[None, :]
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=ok)
        tl.store(mean_ptr + b * N + rows, mean, mask=rows < N)
        tl.store(rstd_ptr + b * N + rows, rstd, mask=rows < N)

    @triton.jit
    def _ln_modulate_bwd_kernel(x_ptr, scale_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dshift_ptr, dscale_ptr,
                                scale_b_stride, dy_b_stride, dy_n_stride, dy_c_stride, N, C,
                                ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """dx for ROWS rows (in chunks of BLOCK_R), and their sums of dshift and dscale (summed over programs on
        the host). Many rows per program keep those partial sums small next to x. dy may have any strides (a
        stride-0 dy comes from `y.sum().backward()`)."""
        b = tl.program_id(0).to(tl.int64)
        tile = tl.program_id(1)
        cols = tl.arange(0, BLOCK_C)
        col_ok = cols < C
        scale = tl.load(scale_ptr + b * scale_b_stride + cols, mask=col_ok, other=0.0).to(tl.float32)
        dshift = tl.zeros([BLOCK_C], tl.float32)
        dscale = tl.zeros([BLOCK_C], tl.float32)
        for r0 in range(0, ROWS, BLOCK_R):
            rows = tile * ROWS + r0 + tl.arange(0, BLOCK_R)
            ok = (rows[:, None] < N) & col_ok[None, :]
            offs = (b * N + rows[:, None]) * C + cols[None, :]
            x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + b * dy_b_stride + rows[:, None] * dy_n_stride + cols[None, :] * dy_c_stride,
                         mask=ok, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + b * N + rows, mask=rows < N, other=0.0)
            rstd = tl.load(rstd_ptr + b * N + rows, mask=rows < N, other=0.0)
            xhat = tl.where(ok, (x - mean[:, None]) * rstd[:, None], 0.0)
            g = dy * (1.0 + scale[None, :])  # gradient reaching LN(x)
            # LayerNorm's backward: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), means over C
            dx = rstd[:, None] * (g - (tl.sum(g, 1) / C)[:, None] - xhat * (tl.sum(g * xhat, 1) / C)[:, None])
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=ok)
            dshift += tl.sum(dy, 0)
            dscale += tl.sum(dy * xhat, 0)
        part = (b * tl.num_programs(1) + tile) * C + cols
        tl.store(dshift_ptr + part, dshift, mask=col_ok)
        tl.store(dscale_ptr + part, dscale, mask=col_ok)

    @triton.jit
    def _gated_residual_fwd_kernel(x_ptr, y_ptr, gate_ptr, out_ptr, gate_b_stride, N, C,
                                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BLOCK_C)
        ok = (rows[:, None] < N) & (cols[None, :] < C)
        offs = (b * N + rows[:, None]) * C + cols[None, :]
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        gate = tl.load(gate_ptr + b * gate_b_stride + cols, mask=cols < C, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, (x + gate[None, :] * y).to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _gated_residual_bwd_kernel(y_ptr, gate_ptr, dout_ptr, dy_ptr, dgate_ptr,
                                   gate_b_stride, dout_b_stride, dout_n_stride, dout_c_stride, N, C,
                                   ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """dy = gate * dout for ROWS rows and their sum of dgate = dout * y (dx = dout, no kernel)."""
        b = tl.program_id(0).to(tl.int64)
        tile = tl.program_id(1)
        cols = tl.arange(0, BLOCK_C)
        gate = tl.load(gate_ptr + b * gate_b_stride + cols, mask=cols < C, other=0.0).to(tl.float32)
        dgate = tl.zeros([BLOCK_C], tl.float32)
        for r0 in range(0, ROWS, BLOCK_R):
            rows = tile * ROWS + r0 + tl.arange(0, BLOCK_R)
            ok = (rows[:, None] < N) & (cols[None, :] < C)
            offs = (b * N + rows[:, None]) * C + cols[None, :]
            y = tl.load(y_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            dout = tl.load(dout_ptr + b * dout_b_stride + rows[:, None] * dout_n_stride
                           + cols[None, :] * dout_c_stride, mask=ok, other=0.0).to(tl.float32)
            tl.store(dy_ptr + offs, (gate[None, :] * dout).to(dy_ptr.dtype.element_ty), mask=ok)
            dgate += tl.sum(dout * y, 0)
        tl.store(dgate_ptr + (b * tl.num_programs(1) + tile) * C + cols, dgate, mask=cols < C)

    @triton.jit
    def _groupnorm_silu_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, C, S, eps,
                                   GROUP_C: tl.constexpr, BLOCK_CG: tl.constexpr, BLOCK_S: tl.constexpr):
        """One program: one (sample, group) of a contiguous (B, C, S = H*W) tensor, in (BLOCK_CG, BLOCK_S) tiles.
        Statistics from sums shifted by the group's first value (accurate when the mean is far from 0),
        then a second sweep writes SiLU(xhat * w + b)."""
        pid = tl.program_id(0).to(tl.int64)  # = sample * groups + group
        groups = C // GROUP_C
        chans = (pid % groups) * GROUP_C + tl.arange(0, BLOCK_CG)  # the group's channels
        chan_ok = tl.arange(0, BLOCK_CG) < GROUP_C
        base = pid * GROUP_C * S  # the group's elements are contiguous
        offs_c = tl.arange(0, BLOCK_CG)[:, None] * S
        offs_s = tl.arange(0, BLOCK_S)
        first = tl.load(x_ptr + base).to(tl.float32)
        s1 = tl.zeros([BLOCK_CG, BLOCK_S], tl.float32)
        s2 = tl.zeros([BLOCK_CG, BLOCK_S], tl.float32)
        for start in range(0, S, BLOCK_S):
            ok = chan_ok[:, None] & (start + offs_s < S)[None, :]
            x = tl.load(x_ptr + base + offs_c + start + offs_s[None, :], mask=ok, other=0.0).to(tl.float32)
            d = tl.where(ok, x - first, 0.0)
            s1 += d
            s2 += d * d
        count = GROUP_C * S
        t1 = tl.sum(tl.sum(s1, 1), 0)
        t2 = tl.sum(tl.sum(s2, 1), 0)
        mean = first + t1 / count
        rstd = 1.0 / tl.sqrt(tl.maximum(t2 / count - (t1 / count) * (t1 / count), 0.0) + eps)
        w = tl.load(w_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)
        for start in range(0, S, BLOCK_S):
            ok = chan_ok[:, None] & (start + offs_s < S)[None, :]
            offs = base + offs_c + start + offs_s[None, :]
            x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            z = (x - mean) * rstd * w[:, None] + bias[:, None]
            y = z / (1.0 + tl.exp(-z))  # SiLU
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=ok)
        tl.store(mean_ptr + pid, mean)
        tl.store(rstd_ptr + pid, rstd)

    @triton.jit
    def _silu_norm_grad(x_ptr, dy_ptr, offs, ok, mean, rstd, w, bias):
        """Recompute xhat = (x - mean) rstd and z = xhat w + b for one tile, and return (xhat, dL/dz) where
        y = SiLU(z): dy * sigmoid(z) * (1 + z (1 - sigmoid(z))). Zero outside the tile's mask."""
        xhat = (tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32) - mean) * rstd
        z = xhat * w[:, None] + bias[:, None]
        sig = 1.0 / (1.0 + tl.exp(-z))
        dz = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32) * sig * (1.0 + z * (1.0 - sig))
        return xhat, tl.where(ok, dz, 0.0)

    @triton.jit
    def _groupnorm_silu_bwd_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, C, S,
                                   GROUP_C: tl.constexpr, BLOCK_CG: tl.constexpr, BLOCK_S: tl.constexpr):
        """One (sample, group): dx, and the sample's share of dweight and dbias (summed over samples on the host).
        Two sweeps: the first gathers the group's sums that GroupNorm's backward needs, the second writes dx."""
        pid = tl.program_id(0).to(tl.int64)
        groups = C // GROUP_C
        chans = (pid % groups) * GROUP_C + tl.arange(0, BLOCK_CG)
        chan_ok = tl.arange(0, BLOCK_CG) < GROUP_C
        base = pid * GROUP_C * S
        offs_c = tl.arange(0, BLOCK_CG)[:, None] * S
        offs_s = tl.arange(0, BLOCK_S)
        mean = tl.load(mean_ptr + pid)
        rstd = tl.load(rstd_ptr + pid)
        w = tl.load(w_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK_CG, BLOCK_S], tl.float32)
        db = tl.zeros([BLOCK_CG, BLOCK_S], tl.float32)
        for start in range(0, S, BLOCK_S):
            ok = chan_ok[:, None] & (start + offs_s < S)[None, :]
            offs = base + offs_c + start + offs_s[None, :]
            xhat, dz = _silu_norm_grad(x_ptr, dy_ptr, offs, ok, mean, rstd, w, bias)
            dw += dz * xhat
            db += dz
        dw_c = tl.sum(dw, 1)  # (BLOCK_CG,) per channel: sum of dz * xhat
        db_c = tl.sum(db, 1)  # per channel: sum of dz
        count = GROUP_C * S
        # with dxhat = dz * w: mean(dxhat) and mean(dxhat * xhat) over the group, from the per-channel sums
        m1 = tl.sum(db_c * w, 0) / count
        m2 = tl.sum(dw_c * w, 0) / count
        for start in range(0, S, BLOCK_S):
            ok = chan_ok[:, None] & (start + offs_s < S)[None, :]
            offs = base + offs_c + start + offs_s[None, :]
            xhat, dz = _silu_norm_grad(x_ptr, dy_ptr, offs, ok, mean, rstd, w, bias)
            dx = rstd * (dz * w[:, None] - m1 - xhat * m2)
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=ok)
        sample = pid // groups
        tl.store(dw_ptr + sample * C + chans, dw_c, mask=chan_ok)
        tl.store(db_ptr + sample * C + chans, db_c, mask=chan_ok)


    def _tuned(kernel, candidates, key, window, allowed=lambda meta, args: True):
        """`kernel` under triton.autotune. `candidates` are (meta, num_warps, num_stages); a call keeps the allowed
        ones whose tile (elements per program) lies in `window`, nearest 4096 elements first (the untuned choice),
        else the allowed one with the smallest tile; with MINIGEN_AUTOTUNE=0 only the first two. These kernels are
        memory-bound: the tile and the warp count decide how many loads each SM keeps in flight, which only a
        measurement on the GPU at hand can settle."""
        configs = [triton.Config(meta, num_warps=w, num_stages=st) for meta, w, st in candidates]

        def prune(configs, named_args, **kwargs):
            args = {**named_args, **kwargs}
            ok = [c for c in configs if allowed(c.kwargs, args)]
            kept = [c for c in ok if window[0] <= _tile(c.kwargs, args) <= window[1]]
            kept.sort(key=lambda c: (abs(math.log2(_tile(c.kwargs, args)) - 12), c.num_warps))
            kept = kept or [min(ok, key=lambda c: _tile(c.kwargs, args))]
            return kept[:2] if quick_autotune() else kept

        return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": prune})(kernel)

    def _tile(meta, args):
        """Elements in one program's tile: rows x padded channels, or group channels x pixels."""
        return meta["BLOCK_R"] * args["BLOCK_C"] if "BLOCK_R" in meta else args["BLOCK_CG"] * meta["BLOCK_S"]

    # num_stages stays 1: Triton does not software-pipeline these loops (3 gave the same registers and shared memory
    # for sm_90 at the benchmark's shapes, scripts/kernel_resources.py), so stages would only double the candidates
    _ROWS = [({"BLOCK_R": r}, w, 1) for r in (1, 2, 4, 8, 16, 32, 64) for w in (4, 8)]
    _PIXELS = [({"BLOCK_S": n}, w, 1) for n in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192) for w in (4, 8)]
    _ln_modulate_fwd_tuned = _tuned(_ln_modulate_fwd_kernel, _ROWS, ["N", "C"], (1024, 8192))
    _ln_modulate_bwd_tuned = _tuned(  # smaller tiles (the backward holds more per element); BLOCK_R must divide ROWS
        _ln_modulate_bwd_kernel, _ROWS, ["N", "C"], (1024, 4096), lambda m, a: m["BLOCK_R"] <= a["ROWS"])
    _pixels_fit = lambda m, a: m["BLOCK_S"] <= max(16, triton.next_power_of_2(a["S"]))  # noqa: E731
    _groupnorm_silu_fwd_tuned = _tuned(_groupnorm_silu_fwd_kernel, _PIXELS, ["C", "S", "GROUP_C"], (2048, 8192),
                                       _pixels_fit)
    _groupnorm_silu_bwd_tuned = _tuned(_groupnorm_silu_bwd_kernel, _PIXELS, ["C", "S", "GROUP_C"], (1024, 4096),
                                       _pixels_fit)


# ---------------------------------------------------------------------------------------------------------------
# 3. Host functions


def _row_blocks(C: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_C, num_warps) for row-wise kernels: a tile of about 4096 elements (16 KB of fp32 registers
    across the program), several rows per program when C is small so each program still moves enough bytes."""
    block_c = triton.next_power_of_2(C)
    if block_c > MAX_BLOCK:
        raise ValueError(f"layernorm_modulate: x has C={C} channels; the Triton kernel takes C <= {MAX_BLOCK}")
    target = 16384 if interpreting() else 4096  # the interpreter pays per program, so give it bigger tiles
    block_r = max(1, min(64, target // block_c))
    return block_r, block_c, 8 if block_c >= 2048 else 4


def _launch(tuned, grid, args, interpreter_tile, **constexprs):
    """Run an autotuned norm kernel: on a GPU the tuner picks the tile; in the interpreter the plain kernel runs with
    `interpreter_tile` (its BLOCK_R or BLOCK_S and num_warps), since tuning there would only cost time. `grid` may
    be a function of the launch's meta-parameters, as Triton allows for both."""
    if interpreting():
        tuned.fn[grid](*args, **constexprs, **interpreter_tile)
    else:
        tuned[grid](*args, **constexprs)


def _ln_modulate_forward(x, shift, scale, eps):
    B, N, C = x.shape
    block_r, block_c, warps = _row_blocks(C)
    y = torch.empty_like(x)
    mean = torch.empty((B, N), dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    args = (x, shift, scale, y, mean, rstd, shift.stride(0), scale.stride(0), N, C, eps)
    _launch(_ln_modulate_fwd_tuned, lambda meta: (B, triton.cdiv(N, meta["BLOCK_R"])), args,
            dict(BLOCK_R=block_r, num_warps=warps), BLOCK_C=block_c)
    return y, mean, rstd


def _reduce_rows(N: int, block_r: int) -> int:
    """Rows per program for the backward kernels that also sum over rows (dshift, dscale, dgate): each program
    writes a (C,) fp32 partial sum per vector, so 16+ rows per program keep those writes under ~15 % of the bytes
    the backward must move, while short sequences still get several programs per sample."""
    return max(block_r, min(16, triton.next_power_of_2(N)))


def _ln_modulate_backward(dy, x, scale, mean, rstd):
    """dx, and (dshift, dscale) stacked as one (2, B, C) tensor in scale's dtype (one sum and one cast for both:
    at small sizes each extra launch costs more than the bytes it moves)."""
    B, N, C = x.shape
    block_r, block_c, warps = _row_blocks(C)
    # on a GPU the tuner picks BLOCK_R <= ROWS, tiles of <= 4096 elements: ROWS covers 4096 // BLOCK_C rows at least
    rows = _reduce_rows(N, block_r) if interpreting() else max(16, min(64, 4096 // block_c))
    tiles = triton.cdiv(N, rows)
    dx = torch.empty_like(x)
    partial = torch.empty((2, B, tiles, C), dtype=torch.float32, device=x.device)  # dshift, dscale per token tile
    args = (x, scale, dy, mean, rstd, dx, partial[0], partial[1], scale.stride(0), *dy.stride(), N, C)
    _launch(_ln_modulate_bwd_tuned, (B, tiles), args, dict(BLOCK_R=block_r, num_warps=warps), ROWS=rows,
            BLOCK_C=block_c)
    return dx, partial.sum(2).to(scale.dtype)  # (2, B, C): the partial sums over token tiles added up


def _group_blocks(group_c: int, S: int) -> tuple[int, int, int]:
    """(BLOCK_CG, BLOCK_S, num_warps): the group's channels by a slice of pixels, about 4096 elements a tile."""
    block_cg = triton.next_power_of_2(group_c)
    target = 16384 if interpreting() else 4096
    block_s = max(16, min(triton.next_power_of_2(S), target // block_cg))
    return block_cg, block_s, 8 if block_cg * block_s >= 4096 else 4


def _groupnorm_silu_forward(x, num_groups, weight, bias, eps):
    B, C = x.shape[:2]
    S = x[0, 0].numel()
    block_cg, block_s, warps = _group_blocks(C // num_groups, S)
    y = torch.empty_like(x)
    mean = torch.empty((B * num_groups,), dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    args = (x, weight, bias, y, mean, rstd, C, S, eps)
    _launch(_groupnorm_silu_fwd_tuned, (B * num_groups,), args, dict(BLOCK_S=block_s, num_warps=warps),
            GROUP_C=C // num_groups, BLOCK_CG=block_cg)
    return y, mean, rstd


def _groupnorm_silu_backward(dy, x, num_groups, weight, bias, mean, rstd):
    """dx, and (dweight, dbias) stacked as one (2, C) tensor in weight's dtype (as _ln_modulate_backward)."""
    B, C = x.shape[:2]
    S = x[0, 0].numel()
    block_cg, block_s, warps = _group_blocks(C // num_groups, S)
    dx = torch.empty_like(x)
    partial = torch.empty((2, B, C), dtype=torch.float32, device=x.device)  # dweight, dbias per sample
    args = (x, weight, bias, dy, mean, rstd, dx, partial[0], partial[1], C, S)
    _launch(_groupnorm_silu_bwd_tuned, (B * num_groups,), args, dict(BLOCK_S=block_s, num_warps=warps),
            GROUP_C=C // num_groups, BLOCK_CG=block_cg)
    return dx, partial.sum(1).to(weight.dtype)  # (2, C): summed over samples


# ---------------------------------------------------------------------------------------------------------------
# 4. Autograd


def _unit_last(t):
    """The kernels read a (B, C) vector with any batch stride but unit channel stride (DiT's chunked adaLN
    output already has it)."""
    return t if t.stride(-1) == 1 else t.contiguous()


class LayerNormModulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, scale, eps):
        x, shift, scale = x.contiguous(), _unit_last(shift), _unit_last(scale)
        y, mean, rstd = _ln_modulate_forward(x, shift, scale, eps)
        ctx.save_for_backward(x, scale, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, scale, mean, rstd = ctx.saved_tensors
        dx, (dshift, dscale) = _ln_modulate_backward(dy, x, scale, mean, rstd)
        return dx, dshift, dscale, None


class GatedResidual(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, gate):
        x, y, gate = x.contiguous(), y.contiguous(), _unit_last(gate)
        B, N, C = x.shape
        block_r, block_c, warps = _row_blocks(C)
        out = torch.empty_like(x)
        _gated_residual_fwd_kernel[(B, triton.cdiv(N, block_r))](x, y, gate, out, gate.stride(0), N, C,
                                                                 BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps)
        ctx.save_for_backward(y, gate)
        return out

    @staticmethod
    def backward(ctx, dout):
        y, gate = ctx.saved_tensors
        B, N, C = y.shape
        block_r, block_c, warps = _row_blocks(C)
        rows = _reduce_rows(N, block_r)
        tiles = triton.cdiv(N, rows)
        dy = torch.empty_like(y)
        dgate = torch.empty((B, tiles, C), dtype=torch.float32, device=y.device)
        _gated_residual_bwd_kernel[(B, tiles)](y, gate, dout, dy, dgate, gate.stride(0), *dout.stride(), N, C,
                                               ROWS=rows, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps)
        return dout, dy, dgate.sum(1).to(gate.dtype)


class GroupNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps):
        x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
        y, mean, rstd = _groupnorm_silu_forward(x, num_groups, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.num_groups = num_groups
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        dx, (dw, db) = _groupnorm_silu_backward(dy.contiguous(), x, ctx.num_groups, weight, bias, mean, rstd)
        return dx, None, dw, db, None


# ---------------------------------------------------------------------------------------------------------------
# 5. Dispatchers


def _check_modulation(op, x, **vectors):
    check_tensor(op, "x", x, ndim=3)
    for name, t in vectors.items():
        check_tensor(op, name, t, shape=(x.shape[0], x.shape[2]), like=x)


def _kernel_ready(op, x, which, **others):
    if which != "triton":
        return False
    for name, t in dict(x=x, **others).items():
        check_kernel_dtype(op, name, t)
    return True


def layernorm_modulate(x, shift, scale, *, eps=1e-6, backend=None):
    """LN(x) * (1 + scale) + shift for x (B, N, C), shift and scale (B, C); see the module docstring."""
    _check_modulation("layernorm_modulate", x, shift=shift, scale=scale)
    which = choose_backend("layernorm_modulate", backend, x.device, training=records_grad(x, shift, scale))
    if not _kernel_ready("layernorm_modulate", x, which):
        return layernorm_modulate_reference(x, shift, scale, eps=eps)
    return LayerNormModulate.apply(x, shift, scale, float(eps))


def gated_residual(x, y, gate, *, backend=None):
    """x + gate * y for x, y (B, N, C) and gate (B, C); see the module docstring."""
    _check_modulation("gated_residual", x, gate=gate)
    check_tensor("gated_residual", "y", y, shape=tuple(x.shape), like=x)
    which = choose_backend("gated_residual", backend, x.device, training=records_grad(x, y, gate))
    if not _kernel_ready("gated_residual", x, which):
        return gated_residual_reference(x, y, gate)
    return GatedResidual.apply(x, y, gate)


def groupnorm_silu(x, num_groups, weight, bias, *, eps=1e-5, backend=None):
    """SiLU(GroupNorm(x)) for x (B, C, H, W) (or any (B, C, ...)); weight, bias (C,) or None."""
    op = "groupnorm_silu"
    check_tensor(op, "x", x)
    if x.dim() < 3:
        raise ValueError(f"{op}: x must be (B, C, H, W) or (B, C, ...), got shape {tuple(x.shape)}")
    C = x.shape[1]
    if not isinstance(num_groups, int) or num_groups < 1 or C % num_groups:
        raise ValueError(f"{op}: num_groups={num_groups!r} must be a positive int dividing C={C}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(op, name, t, shape=(C,), like=x)
    which = choose_backend(op, backend, x.device, training=records_grad(x, weight, bias))
    if not _kernel_ready(op, x, which):
        return groupnorm_silu_reference(x, num_groups, weight, bias, eps=eps)
    weight = torch.ones(C, dtype=x.dtype, device=x.device) if weight is None else weight
    bias = torch.zeros(C, dtype=x.dtype, device=x.device) if bias is None else bias
    return GroupNormSiLU.apply(x, num_groups, weight, bias, float(eps))


def norm_bytes(*tensors: torch.Tensor) -> int:
    """Bytes a memory-bound kernel must move at least: every tensor it reads or writes, once."""
    return sum(t.numel() * t.element_size() for t in tensors)


__all__ = ["layernorm_modulate", "layernorm_modulate_reference", "gated_residual", "gated_residual_reference",
           "groupnorm_silu", "groupnorm_silu_reference", "LayerNormModulate", "GatedResidual", "GroupNormSiLU",
           "norm_bytes"]
