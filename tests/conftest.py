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

torch.set_num_threads(min(2, os.cpu_count() or 1))  # before minigen: its pool then adapts within 1..2 threads

import minigen  # noqa: E402
from minigen import threads  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state, so a failure repeats. Between tests torch's pool follows
    what else the machine is doing (minigen/threads.py); within a test it is held, so a test that compares two
    runs compares them at one thread count."""
    minigen.seed_everything(0)
    threads.adapt(announce=False)
    with threads.fixed():
        yield


@pytest.fixture(autouse=True)
def _cuda_fault_ends_worker():
    """On a GPU (MINIGEN_TEST_GPU=1), a kernel that faults (an illegal memory access) leaves the process's CUDA
    context unusable, so every later test would fail too. After each test, synchronize; if the context is broken, end
    this process at once. Under pytest-xdist (`-n 4`, as scripts/gpu_check.sh runs it) that fails this test only,
    and a fresh worker runs the rest."""
    yield
    if os.environ.get("MINIGEN_TEST_GPU") == "1" and torch.cuda.is_available() and torch.cuda.is_initialized():
        try:
            torch.cuda.synchronize()
        except Exception as error:  # torch raises RuntimeError or torch.AcceleratorError, by version
            print(f"CUDA context broken after this test ({type(error).__name__}: {error}); ending the worker")
            os._exit(3)


def pytest_report_header(config):
    """One line that says whether the kernel tests can run their Triton code here."""
    try:
        import triton
    except ImportError:
        return ("triton: not installed (no wheels for this platform, e.g. macOS or Windows): the kernel tests "
                "that run Triton code are skipped; every kernel still runs on its PyTorch reference")
    return f"triton {triton.__version__}: kernel tests run {'in the interpreter' if os.environ.get('TRITON_INTERPRET') == '1' else 'compiled'}"
