"""Registers, spills, shared memory and pipelining of minigen's kernels compiled for sm_90, without a GPU.

    python scripts/kernel_resources.py

Each kernel is compiled by Triton down to a cubin (minigen.kernels.compile_check) with the facts a real launch
gives the compiler: 16-byte aligned pointers, integers divisible by 16 marked so, head-dim strides of 1 as
constants. A kernel that needs ~200 registers per thread fits one 8-warp program per SM, too few for a memory-bound
kernel to keep enough loads in flight; spilled bytes go to slow local memory; "synchronous loads" in a loop over
tiles means no software pipelining. The shapes are the benchmark's (minigen.bench): DiT-XL's C = 1152, the U-Nets'
groups, attention at B16 H16 N1024.
"""
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import minigen.kernels.norm as norm  # noqa: E402
from minigen.kernels.compile_check import compile_kernel  # noqa: E402

import minigen.kernels.flash_attention as attention  # noqa: E402


def rows():
    """(label, kernel, constexprs, num_warps, num_stages, example integer arguments)."""
    # DiT-XL/2 at 256 px (N 256, C 1152, adaLN vectors chunked from a (B, 6C) tensor), the U-Nets at 64x64 and 32x32
    ln = dict(N=256, C=1152, shift_b_stride=6 * 1152, scale_b_stride=6 * 1152, dy_b_stride=256 * 1152,
              dy_n_stride=1152)
    yield "layernorm_modulate fwd, C=1152", norm._ln_modulate_fwd_kernel, dict(BLOCK_R=2, BLOCK_C=2048), 8, 1, ln
    yield ("layernorm_modulate bwd, C=1152", norm._ln_modulate_bwd_kernel,
           dict(ROWS=16, BLOCK_R=2, BLOCK_C=2048, dy_c_stride=1), 8, 1, ln)
    for group_c, block_s, c, s in ((8, 512, 256, 64 * 64), (16, 256, 512, 32 * 32)):
        for name, kernel in (("fwd", norm._groupnorm_silu_fwd_kernel), ("bwd", norm._groupnorm_silu_bwd_kernel)):
            yield (f"groupnorm_silu {name}, {group_c} channels/group", kernel,
                   dict(GROUP_C=group_c, BLOCK_CG=group_c, BLOCK_S=block_s), 8, 1, dict(C=c, S=s))
    # attention with contiguous q, k, v: the strides as the host passes them, divided by STRIDE_ALIGN
    flags = dict(CAUSAL=False, HAS_MASK=False, PRECISION="tf32", NEED_MASK=False)
    kernels = [("fwd", attention._attn_fwd_kernel, "qkvo", dict(BLOCK_M=128, BLOCK_N=64)),
               ("dK/dV", attention._attn_bwd_dkdv_kernel, ("q", "k", "v", "do", "dk"), dict(BLOCK_M=32, BLOCK_N=128)),
               ("dQ", attention._attn_bwd_dq_kernel, ("q", "k", "v", "do", "dq"), dict(BLOCK_M=128, BLOCK_N=32))]
    for d, block_d in ((64, 64), (72, 128), (128, 128)):
        align = attention._stride_align(torch.empty(16, 16, 1024, d, device="meta"))
        for name, kernel, tensors, tile in kernels:
            ints = dict(H=16, N_Q=1024, N_K=1024, mask_b_stride=0, mask_n_stride=0)
            for t in tensors:
                ints.update({f"{t}_b_stride": 16 * 1024 * d // align, f"{t}_h_stride": 1024 * d // align,
                             f"{t}_n_stride": d // align})
            constexprs = dict(flags, HEAD_DIM=d, BLOCK_D=block_d, STRIDE_ALIGN=align, **tile,
                              **{f"{t}_d_stride": 1 for t in tensors})
            label = f"attention {name}, D={d}, {tile['BLOCK_M']}x{tile['BLOCK_N']}, 8 warps"
            yield label, kernel, constexprs, 8, 3, ints


def main() -> None:
    for label, kernel, constexprs, warps, stages, ints in rows():
        print(f"{label:<44}{compile_kernel(kernel, constexprs, num_warps=warps, num_stages=stages, ints=ints)}",
              flush=True)


if __name__ == "__main__":
    main()
