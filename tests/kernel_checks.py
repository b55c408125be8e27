"""Shared by the kernel tests: the 2x tolerance rule (DESIGN §5) and the compile-for-Hopper check."""
import os
import subprocess
import sys
from pathlib import Path

import pytest


def check_2x(name, out, ref32, low, atol):
    """Max error of `out` vs the fp32 reference <= 2x that of PyTorch in the same dtype (`low`) + atol.

    Prints the max/mean difference first, so a failure (or a GPU log) shows how close it came.
    """
    err = (out.float() - ref32).abs()
    base = (low.float() - ref32).abs().max().item()
    print(f"{name}: max {err.max().item():.2e}  mean {err.mean().item():.2e}  (PyTorch {low.dtype}: {base:.2e})")
    assert err.max().item() <= 2 * base + atol, name


def compile_for_hopper(script: str) -> str:
    """Run `script` (which calls triton.compile for sm_90) in a subprocess with the interpreter off.

    The interpreter never runs Triton's compiler; this catches what only compiled mode rejects. Exit code 77
    from the script means this Triton's compiler API differs: the test is skipped. Returns stdout.
    """
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True,
                            text=True, timeout=600)
    if result.returncode == 77:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
