"""Registers, shared memory and spills of minigen's kernels compiled for sm_90, without a GPU.

    python scripts/kernel_resources.py

Triton compiles each kernel (an `ASTSource` with a bf16 signature) down to a cubin, and the `cuobjdump` that ships
with Triton reads its resource usage. A kernel that needs ~200 registers per thread fits one 8-warp program per SM,
too few for a memory-bound kernel to keep enough loads in flight; LOCAL > 0 means spills. The shapes are the
benchmark's (minigen.bench): DiT-XL's C = 1152, the U-Nets' groups.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import minigen.kernels.norm as norm  # noqa: E402

attention = sys.modules["minigen.kernels.attention"]  # (the package's `attention` attribute is the function)
FP32 = {"mean_ptr", "rstd_ptr", "dshift_ptr", "dscale_ptr", "dgate_ptr", "dw_ptr", "db_ptr", "lse_ptr", "delta_ptr"}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def usage(kernel, constexprs: dict, num_warps: int, num_stages: int = 3, ints: dict | None = None) -> str:
    """Registers, spills (STACK/LOCAL), the shared memory Triton allocates and whether the loops' loads became
    asynchronous copies (pipelined), for one compile-time configuration. `ints` gives example values of the
    integer arguments: as in a real launch, those divisible by 16 are marked so (Triton specializes on it), and
    every pointer is 16-byte aligned. Without that the compiler cannot vectorise or pipeline the loads and the
    numbers describe a kernel that never runs."""
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn  # unwrap triton.autotune / triton.heuristics
    sig = {n: "constexpr" if n in constexprs else "*fp32" if n in FP32 else "*u8" if n == "mask_ptr"
           else "*bf16" if n.endswith("_ptr") else "fp32" if n in ("eps", "qk_scale", "sm_scale") else "i32"
           for n in kernel.arg_names}
    ints = ints or {}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names)
             if n not in constexprs and (n.endswith("_ptr") or ints.get(n, 1) % 16 == 0)}
    compiled = triton.compile(ASTSource(kernel, sig, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([str(CUOBJDUMP), "-res-usage", f.name], capture_output=True, text=True).stdout
    regs = " ".join(w for line in out.splitlines() if "REG" in line for w in line.split()
                    if w.split(":")[0] in ("REG", "STACK", "LOCAL"))
    pipelined = "async_copy" in compiled.asm["ttgir"]
    return f"{regs} SHARED:{compiled.metadata.shared} {'pipelined' if pipelined else 'synchronous loads'}"


def main() -> None:
    # example integer arguments of the benchmark's shapes: DiT-XL/2 at 256 px (N 256, C 1152), the U-Nets' 64x64
    ln = dict(N=256, C=1152, shift_b_stride=6 * 1152, scale_b_stride=6 * 1152, dy_b_stride=256 * 1152,
              dy_n_stride=1152)
    gn = dict(C=256, S=64 * 64)
    rows = [
        ("layernorm_modulate fwd, C=1152", norm._ln_modulate_fwd_kernel, dict(BLOCK_R=2, BLOCK_C=2048), 8, 1, ln),
        ("layernorm_modulate bwd, C=1152", norm._ln_modulate_bwd_kernel,
         dict(ROWS=16, BLOCK_R=2, BLOCK_C=2048, dy_c_stride=1), 8, 1, ln),
        ("groupnorm_silu fwd, 8 channels/group", norm._groupnorm_silu_fwd_kernel,
         dict(GROUP_C=8, BLOCK_CG=8, BLOCK_S=512), 8, 1, gn),
        ("groupnorm_silu bwd, 8 channels/group", norm._groupnorm_silu_bwd_kernel,
         dict(GROUP_C=8, BLOCK_CG=8, BLOCK_S=512), 8, 1, gn),
        ("groupnorm_silu bwd, 16 channels/group", norm._groupnorm_silu_bwd_kernel,
         dict(GROUP_C=16, BLOCK_CG=16, BLOCK_S=256), 8, 1, dict(C=512, S=32 * 32)),
    ]
    # attention at B16 H16 N1024 with contiguous q, k, v: the strides as the host passes them, divided by
    # STRIDE_ALIGN (attention._stride_align); head-dim strides of 1 are compile-time constants in a real launch
    # (Triton specializes integer arguments equal to 1), so they are here too
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
            rows.append((f"attention {name}, D={d}, {tile['BLOCK_M']}x{tile['BLOCK_N']}, 8 warps", kernel,
                         constexprs, 8, 3, ints))
    for name, kernel, constexprs, warps, stages, ints in rows:
        print(f"{name:<46}{usage(kernel, constexprs, warps, stages, ints)}", flush=True)


if __name__ == "__main__":
    main()
