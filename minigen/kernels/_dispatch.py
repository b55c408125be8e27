"""Shared helpers for the kernel dispatchers: is Triton here, which backend runs, and clear argument errors.

Backends:
    "triton"     the Triton kernels in this package (CUDA tensors on compute capability >= 8.0, or CPU tensors
                 under the Triton interpreter, `TRITON_INTERPRET=1` set before `triton` is first imported)
    "sdpa"       PyTorch's `scaled_dot_product_attention` (attention only): the fast fallback on CUDA when Triton
                 is missing or the GPU is older than compute capability 8.0 (e.g. Colab's T4, 7.5)
    "reference"  the readable PyTorch version beside each kernel

Choice, first match wins: the call's `backend=` argument; the `MINIGEN_KERNELS` environment variable; Triton
for CUDA tensors where it can run AND a recorded GPU measurement shows it beating its fallback for this kind of
call (`TRITON_WINS`); else the fallback: PyTorch SDPA for attention (on every device: it is PyTorch's fast path on
the CPU too), the reference for the norms.
"""
import functools
import os
import warnings

import torch

try:  # Triton is optional: without it every kernel runs on its PyTorch reference
    import triton
    import triton.language as tl
    TRITON_MISSING_REASON = None
except Exception as error:  # ImportError, or a broken install that fails while importing
    triton = tl = None
    TRITON_MISSING_REASON = f"{type(error).__name__}: {error}"

BACKENDS = ("triton", "sdpa", "reference")
MIN_CAPABILITY = (8, 0)  # Ampere: the kernels use bf16 and the async copies that tl.dot pipelines rely on

# Whether Triton runs by default, per op, for (inference, training) calls: True only where the recorded measurement
# (docs/results.md under 07_kernels: NVIDIA H200, torch 2.11, Triton 3.6, bf16, 2026-11-26) shows the kernel faster
# than what it replaces. "training" means autograd records the call (the backward will run too). A kernel that lost,
# or was never timed, stays available with backend="triton" or MINIGEN_KERNELS=triton (notebook 07, the bench).
TRITON_WINS = {
    "attention": (False, False),           # fwd 0.22-0.96x default SDPA at all six shapes; fwd+bwd 0.20-0.88x
    "layernorm_modulate": (True, False),   # fwd 1.8-2.4x eager PyTorch; fwd+bwd 0.34-0.46x
    "groupnorm_silu": (True, False),       # fwd 1.2-1.9x eager; fwd+bwd 0.44-0.68x (0.44x at the course U-Net)
    "gated_residual": (False, False),      # not measured on a GPU yet
    "temporal_attention": (False, False),  # not measured on a GPU yet
}


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def quick_autotune() -> bool:
    """MINIGEN_AUTOTUNE=0: autotuned kernels keep only their first two candidates (a GPU test run compiles and times
    every candidate for every new shape key, which the tests do not need)."""
    return os.environ.get("MINIGEN_AUTOTUNE", "1") == "0"


@functools.lru_cache(maxsize=None)
def say_once(message: str) -> None:
    """Warn with `message` the first time it is asked for, and stay quiet after (cached per message)."""
    warnings.warn(message, stacklevel=3)


def within_triton_limits(op: str, which: str, backend: str | None, sizes) -> str:
    """The backend to run: `which`, unless it is "triton" and the problem exceeds one of the kernel's limits.
    `sizes` are (name, value, limit) triples, e.g. ("head dim D", 200, 128). Over a limit, backend="triton" (asked
    for by name) is a ValueError naming each size; the default falls back to PyTorch SDPA with one warning."""
    if which != "triton":
        return which
    too_big = [f"{name} = {value} > {limit}" for name, value, limit in sizes if value > limit]
    if not too_big:
        return which
    if backend == "triton":
        takes = " and ".join(f"{name.split()[-1]} <= {limit}" for name, _, limit in sizes)
        raise ValueError(f"{op}: q has {', '.join(too_big)}; the Triton kernel takes {takes} (use backend='sdpa')")
    say_once(f"minigen.kernels: {', '.join(too_big)}; {op} uses PyTorch SDPA")
    return "sdpa"


def triton_can_run(device: torch.device) -> tuple[bool, str]:
    """Whether the Triton kernels can run on tensors on `device`, and if not, why (one sentence)."""
    if triton is None:
        return False, f"Triton is not installed ({TRITON_MISSING_REASON})"
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < MIN_CAPABILITY:
            name = torch.cuda.get_device_name(device)
            return False, f"{name} has compute capability {capability[0]}.{capability[1]} < 8.0"
        return True, ""
    if device.type == "cpu" and interpreting():
        return True, ""
    return False, (f"Triton kernels need a CUDA tensor, or a CPU tensor with TRITON_INTERPRET=1 set before "
                   f"triton is imported (got a {device.type} tensor)")


def records_grad(*tensors) -> bool:
    """Whether autograd records a call on these tensors (so its backward will run: a training call)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def choose_backend(op: str, backend: str | None, device: torch.device, fallback: str = "reference",
                   training: bool = False) -> str:
    """The backend that runs `op` on `device` (see the module docstring for the order of choice); `training` says
    whether autograd records the call, which `TRITON_WINS` tells apart."""
    allowed = BACKENDS if fallback == "sdpa" else ("triton", "reference")
    if backend is not None and backend not in allowed:
        raise ValueError(f"{op}: backend={backend!r} is not a backend for it; choose one of {', '.join(allowed)}")
    asked = backend or os.environ.get("MINIGEN_KERNELS", "").strip().lower() or None
    if asked is not None:
        if asked not in BACKENDS:
            raise ValueError(f"MINIGEN_KERNELS={asked!r} is not a backend; choose one of {', '.join(BACKENDS)}")
        if asked not in allowed:  # MINIGEN_KERNELS=sdpa: ops without an SDPA version use their reference
            return fallback
        if asked == "triton":
            ok, why = triton_can_run(device)
            if not ok:
                raise RuntimeError(f"{op}: the Triton backend was asked for but cannot run: {why}")
        return asked
    if device.type != "cuda" or not TRITON_WINS.get(op, (False, False))[bool(training)]:
        return fallback
    ok, why = triton_can_run(device)
    if ok:
        return "triton"
    say_once(f"minigen.kernels: {why}; {op} uses {'PyTorch SDPA' if fallback == 'sdpa' else 'the PyTorch reference'}")
    return fallback


def check_tensor(op: str, name: str, t, *, ndim: int | None = None, shape: tuple | None = None,
                 like: torch.Tensor | None = None, floating: bool = True) -> None:
    """Raise a clear error naming argument `name` of `op` when it has the wrong type, rank, shape, dtype or device.

    `shape` may hold None for a free size; `like` asks for the same dtype and device as that tensor.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if shape is not None and (len(shape) != t.dim() or any(s is not None and s != n for s, n in zip(shape, t.shape))):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{op}: {name} must have shape {want}, got {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    if like is not None and t.dtype != like.dtype:
        raise TypeError(f"{op}: {name} has dtype {t.dtype} but the input has {like.dtype}; cast it first")
    if like is not None and t.device != like.device:
        raise ValueError(f"{op}: {name} is on {t.device} but the input is on {like.device}")


def check_kernel_dtype(op: str, name: str, t: torch.Tensor) -> None:
    """The Triton kernels take fp16, bf16 and fp32 (bf16 only on a GPU: the interpreter has no bf16)."""
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; the Triton kernel takes float16, bfloat16 or float32")
    if t.dtype == torch.bfloat16 and t.device.type == "cpu":
        raise TypeError(f"{op}: {name} is bfloat16 on the CPU; the Triton interpreter has no bf16 (use a GPU)")
