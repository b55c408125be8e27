"""The shipped MNIST: split sizes, range, labels, nested subsets, and a clear error for a bad file."""
import shutil

import pytest
import torch

from minigen.data import DataFileError, load_mnist
from minigen.data.mnist import data_dir


@pytest.mark.parametrize("split, n", [("train", 50_000), ("val", 10_000), ("test", 10_000)])
def test_splits(split, n):
    d = load_mnist(split)
    assert d.images.shape == (n, 1, 28, 28) and d.images.dtype == torch.float32
    assert d.images.min() == -1 and d.images.max() == 1
    assert d.labels.shape == (n,) and set(d.labels.unique().tolist()) == set(range(10))


def test_subsets_are_nested():
    small, large = load_mnist("train", n=100), load_mnist("train", n=1000)
    assert torch.equal(small.images, large.images[:100])


def test_values_are_bytes():
    x = (load_mnist("test", n=200).images + 1) / 2 * 255
    assert (x - x.round()).abs().max() < 1e-4


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_mnist("training")
    with pytest.raises(ValueError, match="n must be"):
        load_mnist("val", n=10_001)


def test_changed_byte_names_file_and_fix(tmp_path):
    copy = tmp_path / "mnist.npz"
    shutil.copy(data_dir() / "mnist.npz", copy)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    copy.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=r"(?s)mnist\.npz is corrupt.*prepare_mnist\.py"):
        load_mnist("test", path=copy)


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="missing"):
        load_mnist("test", path=tmp_path / "nope.npz")
