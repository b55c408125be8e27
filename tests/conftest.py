"""Test settings: CPU only (unless MINIGEN_TEST_GPU=1), the ci profile, deterministic seeds, and Triton's interpreter for kernel tests.

Environment variables are set here, at import, because Triton reads TRITON_INTERPRET when it is first
imported and minigen reads MINIGEN_PROFILE when a profile is asked for.
"""
import os

os.environ.setdefault("MINIGEN_PROFILE", "ci")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "0")  # same rounding in the interpreter and on GPU
if os.environ.get("MINIGEN_TEST_GPU") != "1":  # MINIGEN_TEST_GPU=1 runs the same tests on CUDA, compiled
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

import minigen  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state, so a failure repeats."""
    minigen.seed_everything(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
