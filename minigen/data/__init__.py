"""Data for the course, in one convention: images (N, C, H, W) float in [-1, 1], videos (N, T, C, H, W),
labels, attributes and captions alongside in a small dataclass. Nothing downloads at run time."""
from .mnist import DataFileError, LabeledImages, load_mnist

__all__ = ["DataFileError", "LabeledImages", "load_mnist"]
