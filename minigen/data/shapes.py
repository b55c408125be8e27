"""Captioned shapes: coloured shapes on black with captions like "a small red circle in the top left".

The course's text-conditioned models learn from this set: the tiny CLIP (image <-> caption), the
class/caption-conditioned diffusion and DiT with classifier-free guidance, and the CLIP score of
section 8 of DESIGN.md. Every caption is exactly true of its image, so a sample that ignores part of its
prompt is easy to spot. Four words pick the image: shape, colour, size and position; small jitters of
position, size and tint keep the set from being a list of 240 fixed pictures.

This file also holds the small rendering kit that faces.py and video.py share: a uniform random table
drawn from a seeded `torch.Generator` (never the global RNG), signed distance functions, and
anti-aliased coverage. Drawing all randomness as one (n, k) table read row by row makes the sets nested:
the first m samples of `make_shapes(n, seed)` equal `make_shapes(m, seed)`, like the MNIST subsets.
"""
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
RGB = ((0.95, 0.15, 0.15), (0.15, 0.8, 0.2), (0.2, 0.35, 1.0),   # red, green, blue
       (0.95, 0.9, 0.15), (0.9, 0.2, 0.9), (0.15, 0.85, 0.9))    # yellow, magenta, cyan
CENTERS = ((-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5), (0.0, 0.0))  # (x, y), y points down
RADII = (0.24, 0.36)  # small, large, in image units (the image spans [-1, 1]); +-5 % jitter
VOCAB = ("<pad>", "a", "in", "the", *SIZES, *COLORS, *SHAPES, "top", "bottom", "left", "right", "center")
CONTEXT = 8  # words in the longest caption: "a small red circle in the top left"


# ----------------------------------------------------------------------------- shared helpers

def check_int(name: str, value, minimum: int) -> int:
    """`value` as an int >= minimum, else a ValueError that names the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def uniform_table(n: int, k: int, seed: int) -> torch.Tensor:
    """(n, k) uniforms in [0, 1) from a private generator; row i depends only on (seed, k, i)."""
    generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
    return torch.rand(n, k, generator=generator)


def pick(u: torch.Tensor, choices: int) -> torch.Tensor:
    """Uniforms in [0, 1) -> int64 uniform in 0..choices-1 (clamped: float32 u * choices can round up)."""
    return (u * choices).long().clamp_max(choices - 1)


def pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y of pixel centres, each (1, H, W), spanning [-1, 1]; x points right and y down."""
    ticks = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # (H,)
    y, x = torch.meshgrid(ticks, ticks, indexing="ij")                      # (H, W) each
    return x[None], y[None]


def coverage(sdf: torch.Tensor, pixel) -> torch.Tensor:
    """Signed distance -> fraction of a pixel covered (a one-pixel linear ramp across the edge)."""
    return (0.5 - sdf / pixel).clamp(0.0, 1.0)


def paint(canvas: torch.Tensor, alpha: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """Composite a colour (n, C) over canvas (n, C, H, W) where alpha (n, H, W) says; in place."""
    return canvas.lerp_(rgb[:, :, None, None].expand_as(canvas), alpha[:, None])  # alpha: (n, 1, H, W)


def chunked(render, *per_sample: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """render(*rows) on blocks of `chunk` samples, concatenated along dim 0.

    Same result as one call on all rows, but every temporary stays cache-sized (256 images of 32x32 are
    1 MB per tensor), which on a small CPU is several times faster than 10k-image temporaries.
    """
    return torch.cat([render(*rows) for rows in zip(*(t.split(chunk) for t in per_sample))])


def sdf_circle(x, y, r):
    return torch.hypot(x, y) - r


def sdf_box(x, y, half_w, half_h):
    qx, qy = x.abs() - half_w, y.abs() - half_h
    return torch.hypot(qx.clamp_min(0), qy.clamp_min(0)) + torch.maximum(qx, qy).clamp_max(0)


def sdf_square(x, y, r):
    return sdf_box(x, y, 0.82 * r, 0.82 * r)  # 0.82: about the area of the circle of radius r


def sdf_triangle(x, y, r):
    """Equilateral triangle pointing up, side 2r, its bounding box centred (Inigo Quilez's formula)."""
    k = 3 ** 0.5
    px, py = x.abs() - r, -y + 1.5 * r / k  # flip y (the formula's points up), shift down r / (2 k)
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - torch.minimum(torch.maximum(px, -2 * r), torch.zeros_like(px))
    return -torch.hypot(px, py) * torch.sign(py)


def sdf_cross(x, y, r):
    return torch.minimum(sdf_box(x, y, r, 0.34 * r), sdf_box(x, y, 0.34 * r, r))


SDFS = (sdf_circle, sdf_square, sdf_triangle, sdf_cross)  # in the order of SHAPES
EXTENT = 1.0  # farthest reach of any shape from its centre along x or y, in radii


def shape_alpha(kind: torch.Tensor, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, pixel) -> torch.Tensor:
    """Coverage (n, H, W) of shape kind (n,) with radius r (n, 1, 1) at offsets x, y (n, H, W) from its centre."""
    sdf = torch.empty_like(x)
    for k, fn in enumerate(SDFS):  # one vectorized call per shape kind, not per sample
        rows = kind == k
        sdf[rows] = fn(x[rows], y[rows], r[rows])
    return coverage(sdf, pixel)


# ----------------------------------------------------------------------------- the captioned set

class AttributeNames:
    """The words behind the attribute indices, on the class (CaptionedShapes.COLORS[i]); scenes share them."""
    SHAPES: ClassVar[tuple[str, ...]] = SHAPES
    COLORS: ClassVar[tuple[str, ...]] = COLORS
    SIZES: ClassVar[tuple[str, ...]] = SIZES
    POSITIONS: ClassVar[tuple[str, ...]] = POSITIONS


@dataclass
class CaptionedShapes(AttributeNames):
    images: torch.Tensor    # (N, 3, H, W) float in [-1, 1]
    captions: list[str]     # N captions, each exactly true of its image
    shape: torch.Tensor     # (N,) int64 index into SHAPES
    color: torch.Tensor     # (N,) int64 index into COLORS
    scale: torch.Tensor     # (N,) int64 index into SIZES
    position: torch.Tensor  # (N,) int64 index into POSITIONS

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> "CaptionedShapes":
        return CaptionedShapes(self.images.to(device), self.captions, self.shape.to(device),
                               self.color.to(device), self.scale.to(device), self.position.to(device))


def caption_for(shape: int, color: int, scale: int, position: int) -> str:
    """The caption of one image from its four attribute indices, e.g. "a large blue square in the center"."""
    return f"a {SIZES[int(scale)]} {COLORS[int(color)]} {SHAPES[int(shape)]} in the {POSITIONS[int(position)]}"


def make_shapes(n: int, seed: int = 0, size: int = 32) -> CaptionedShapes:
    """n captioned shapes, (n, 3, size, size) in [-1, 1]: a pure function of (n, seed, size)."""
    check_int("n", n, 1)
    check_int("size", size, 24)  # below 24 a large shape can reach the border
    u = uniform_table(n, 8, seed)                                     # (n, 8)
    shape, color, scale, position = (pick(u[:, i], len(v)) for i, v in
                                     enumerate((SHAPES, COLORS, SIZES, POSITIONS)))
    centre = torch.tensor(CENTERS)[position] + 0.08 * (u[:, 4:6] - 0.5)      # (n, 2) jitter +-0.04
    radius = torch.tensor(RADII)[scale] * (0.95 + 0.1 * u[:, 6])             # (n,) jitter +-5 %
    tint = torch.tensor(RGB)[color] * (0.85 + 0.15 * u[:, 7:8])              # (n, 3) brightness jitter
    images = chunked(lambda *rows: _render(*rows, size), shape, centre, radius, tint)
    captions = [caption_for(*a) for a in torch.stack([shape, color, scale, position], 1).tolist()]
    return CaptionedShapes(images, captions, shape, color, scale, position)


def _render(shape, centre, radius, tint, size: int) -> torch.Tensor:
    """One shape per image on black: (n, 3, size, size) in [-1, 1]."""
    x, y = pixel_grid(size)                                                  # (1, H, W) each
    x, y = x - centre[:, 0, None, None], y - centre[:, 1, None, None]        # (n, H, W) each
    alpha = shape_alpha(shape, x, y, radius[:, None, None], 2 / size)        # (n, H, W)
    return paint(torch.zeros(len(shape), 3, size, size), alpha, tint) * 2 - 1


def tokenize(captions: str | Sequence[str], length: int = CONTEXT, vocab: Sequence[str] = VOCAB) -> torch.Tensor:
    """Captions -> (N, length) int64 indices into `vocab`, padded with 0 ("<pad>") on the right; a caption that is
    too long, or a word outside `vocab`, is a ValueError that names it. Scenes pass their own vocabulary."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    index = {word: i for i, word in enumerate(vocab)}
    tokens = torch.zeros(len(captions), length, dtype=torch.long)
    for row, caption in enumerate(captions):
        words = caption.lower().split()
        if len(words) > length:
            raise ValueError(f"caption {caption!r} has {len(words)} words; at most {length} fit")
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(f"unknown word{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
                             f"{caption!r}: the vocabulary is {' '.join(vocab[1:])}")
        tokens[row, :len(words)] = torch.tensor([index[w] for w in words], dtype=torch.long)
    return tokens
