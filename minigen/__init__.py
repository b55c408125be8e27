"""minigen: the small library that the course's notebooks grow.

Kept light on purpose: importing `minigen` pulls in torch and nothing else heavy, so a notebook's first
cell is quick and every submodule (`minigen.data`, `minigen.train`, ...) is imported only when used.
"""
import os
import random

import numpy as np
import torch

from . import threads

# Size torch's CPU pool for what the machine is doing now, before torch has run an op (its OpenMP pool starts at
# the first parallel op): a pool with more threads than free cores makes every step wait (minigen/threads.py).
threads.start()

__version__ = "0.1.0"

__all__ = ["__version__", "seed_everything", "get_device", "setup"]


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) so a CPU run repeats number for number.

    Returns a fresh `torch.Generator` seeded the same way, for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device the course runs on: `MINIGEN_DEVICE` if set, else CUDA when present, else CPU.

    Apple's MPS is not picked by default: a few ops the course uses are missing or nondeterministic there.
    Ask for it explicitly with `get_device("mps")` or `MINIGEN_DEVICE=mps`.
    """
    name = prefer or os.environ.get("MINIGEN_DEVICE")
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
    return device


def setup(seed: int = 0):
    """A notebook's first line: seed everything, pick the profile and device, and say which.

    Returns (profile, device). The profile decides every size in the notebook (see minigen.profile).
    """
    from . import profile as profiles

    seed_everything(seed)
    active, device = profiles.current(), get_device()
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"minigen {__version__} | torch {torch.__version__} | {active} | device {device}{gpu} | seed {seed}")
    if device.type == "cpu":
        print(f"CPU: {threads.describe()}")
    return active, device
