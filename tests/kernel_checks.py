"""Shared by the kernel tests: the 2x tolerance rule (DESIGN §5) and the compile-for-Hopper check."""
import pytest


def check_2x(name, out, ref32, low, atol):
    """Max error of `out` vs the fp32 reference <= 2x that of PyTorch in the same dtype (`low`) + atol.

    Prints the max/mean difference first, so a failure (or a GPU log) shows how close it came.
    """
    err = (out.float() - ref32).abs()
    base = (low.float() - ref32).abs().max().item()
    print(f"{name}: max {err.max().item():.2e}  mean {err.mean().item():.2e}  (PyTorch {low.dtype}: {base:.2e})")
    assert err.max().item() <= 2 * base + atol, name


def compile_for_hopper(specs: list[dict]) -> list:
    """Compile each kernel spec for sm_90 in a subprocess with the interpreter off (minigen.kernels.compile_check);
    skip the test where this Triton's compiler API is not the one written against. The interpreter never runs
    Triton's compiler; this catches what only compiled mode rejects."""
    from minigen.kernels.compile_check import CompilerUnavailable, compile_in_subprocess
    try:
        return compile_in_subprocess(specs)
    except CompilerUnavailable as error:
        pytest.skip(f"Triton cannot compile ahead of time here: {error}")
