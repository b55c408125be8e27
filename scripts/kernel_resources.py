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

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import minigen.kernels.norm as norm  # noqa: E402

attention = sys.modules["minigen.kernels.attention"]  # (the package's `attention` attribute is the function)
FP32 = {"mean_ptr", "rstd_ptr", "dshift_ptr", "dscale_ptr", "dgate_ptr", "dw_ptr", "db_ptr", "lse_ptr", "delta_ptr"}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def usage(kernel, constexprs: dict, num_warps: int, num_stages: int = 3) -> str:
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn  # unwrap triton.autotune / triton.heuristics
    sig = {n: "constexpr" if n in constexprs else "*fp32" if n in FP32 else "*u8" if n == "mask_ptr"
           else "*bf16" if n.endswith("_ptr") else "fp32" if n in ("eps", "qk_scale", "sm_scale") else "i32"
           for n in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, sig, constexprs), target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([str(CUOBJDUMP), "-res-usage", f.name], capture_output=True, text=True).stdout
    return " ".join(line.strip() for line in out.splitlines() if "REG" in line)


def main() -> None:
    rows = [
        ("layernorm_modulate fwd, C=1152", norm._ln_modulate_fwd_kernel, dict(BLOCK_R=2, BLOCK_C=2048), 8),
        ("layernorm_modulate bwd, C=1152", norm._ln_modulate_bwd_kernel, dict(ROWS=16, BLOCK_R=2, BLOCK_C=2048), 8),
        ("groupnorm_silu fwd, 2 channels/group", norm._groupnorm_silu_fwd_kernel,
         dict(GROUP_C=2, BLOCK_CG=2, BLOCK_S=1024), 4),
        ("groupnorm_silu bwd, 2 channels/group", norm._groupnorm_silu_bwd_kernel,
         dict(GROUP_C=2, BLOCK_CG=2, BLOCK_S=1024), 4),
        ("groupnorm_silu bwd, 16 channels/group", norm._groupnorm_silu_bwd_kernel,
         dict(GROUP_C=16, BLOCK_CG=16, BLOCK_S=256), 8),
    ]
    # head-dim strides of 1 are compile-time constants in a real launch (Triton specializes integer arguments equal
    # to 1), so they are here too; without that the register counts come out higher than what runs
    common = dict(CAUSAL=False, HAS_MASK=False, PRECISION="tf32", NEED_MASK=False,
                  q_d_stride=1, k_d_stride=1, v_d_stride=1, o_d_stride=1)
    for d, block_d in ((64, 64), (72, 128), (128, 128)):
        rows.append((f"attention fwd, D={d}, 128x64 tile, 4 warps", attention._attn_fwd_kernel,
                     dict(common, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=128, BLOCK_N=64), 4))
    for name, kernel, constexprs, warps in rows:
        print(f"{name:<46}{usage(kernel, constexprs, warps)}")


if __name__ == "__main__":
    main()
