"""Cartoon faces with independent binary attributes, for the latent-space notebooks.

A VAE or GAN trained on these faces should learn directions that mean something, and the set lets a
notebook check that it did: each of the ATTRIBUTES is an independent fair coin and plainly visible at
32x32, so "mean latent of smiling faces - mean latent of not smiling faces", added to a frowning face,
should make it smile (the attribute-vector arithmetic of Larsen et al. 2016 and White 2016). Skin tone,
hair tint, hat colour, background, and the face's position and size vary continuously, so the set is not
a list of 32 fixed pictures and a model must separate attributes from nuisance.
"""
from dataclasses import dataclass
from typing import ClassVar

import torch

from .shapes import check_int, chunked, coverage, paint, pick, pixel_grid, sdf_box, sdf_circle, uniform_table

ATTRIBUTES = ("smiling", "eyes_open", "glasses", "dark_hair", "hat")
SKIN = ((0.99, 0.86, 0.72), (0.5, 0.32, 0.2))         # lightest and darkest skin, mixed by a uniform
HAIR_DARK = ((0.16, 0.1, 0.06), (0.04, 0.03, 0.03))   # dark brown .. black
HAIR_LIGHT = ((0.98, 0.84, 0.35), (0.9, 0.45, 0.15))  # blond .. ginger
HATS = ((0.85, 0.1, 0.1), (0.15, 0.3, 0.9), (0.1, 0.6, 0.2), (0.55, 0.15, 0.75))  # red, blue, green, purple
EYE_X, EYE_Y = 0.36, -0.05  # eye centres in face units (face radius 1; x mirrored, y down)


@dataclass
class Faces:
    images: torch.Tensor      # (N, 3, H, W) float in [-1, 1]
    attributes: torch.Tensor  # (N, A) float in {0, 1}, columns in the order of ATTRIBUTES

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ATTRIBUTES

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> "Faces":
        return Faces(self.images.to(device), self.attributes.to(device))

    def attribute(self, name: str) -> torch.Tensor:
        """One attribute's column (N,) by name, e.g. faces.attribute("smiling")."""
        if name not in ATTRIBUTES:
            raise ValueError(f"name must be one of {ATTRIBUTES}, got {name!r}")
        return self.attributes[:, ATTRIBUTES.index(name)]


def _mix(pair, u: torch.Tensor) -> torch.Tensor:
    """Blend two RGB colours by u (n,) -> (n, 3)."""
    a, b = torch.tensor(pair)                      # (3,) each
    return a + u[:, None] * (b - a)


def _has(on: torch.Tensor, name: str) -> torch.Tensor:
    """The 0/1 column of attribute `name`, shaped (n, 1, 1) to gate an (n, H, W) layer."""
    return on[:, ATTRIBUTES.index(name), None, None]


def _ellipse(x, y, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (exact on a circle)."""
    return (torch.hypot(x / rx, y / ry) - 1) * min(rx, ry)


def _draw_head(canvas, x, y, px, on, u):
    """Face, then hair (a cap framing the forehead and temples), dark or light."""
    face = _ellipse(x, y, 0.82, 1.0)
    paint(canvas, coverage(face, px), _mix(SKIN, u[:, 0]))
    hair = torch.maximum(_ellipse(x, y + 0.06, 0.96, 1.1), -_ellipse(x, y - 0.2, 0.74, 0.92))
    hair = torch.maximum(hair, y - 0.3)              # nothing below the ears
    dark = _has(on, "dark_hair").view(-1, 1)         # (n, 1)
    tint = dark * _mix(HAIR_DARK, u[:, 1]) + (1 - dark) * _mix(HAIR_LIGHT, u[:, 1])
    paint(canvas, coverage(hair, px), tint)


def _draw_eyes(canvas, x, y, px, on):
    """Open: white eyes with dark pupils; closed: a dark line. Glasses: tinted lenses in dark rims."""
    ex, ey = x.abs() - EYE_X, y - EYE_Y              # both eyes at once: mirror x
    n, black = len(canvas), torch.full((len(canvas), 3), 0.05)
    is_open, glasses = _has(on, "eyes_open"), _has(on, "glasses")  # (n, 1, 1) each
    paint(canvas, coverage(sdf_circle(ex, ey, 0.19), px) * is_open, torch.ones(n, 3))
    paint(canvas, coverage(sdf_circle(ex, ey, 0.09), px) * is_open, black)
    paint(canvas, coverage(sdf_box(ex, ey, 0.17, 0.0) - 0.055, px) * (1 - is_open), black)
    lens = sdf_circle(ex, ey, 0.3)
    paint(canvas, 0.35 * coverage(lens, px) * glasses, torch.tensor([[0.6, 0.8, 1.0]]).expand(n, 3))
    rims = torch.minimum(lens.abs() - 0.065, sdf_box(x, ey, 0.1, 0.04))  # two rings and a bridge
    paint(canvas, coverage(rims, px) * glasses, black)


def _draw_mouth_and_hat(canvas, x, y, px, on, u):
    """Smiling: an open grin (lower half-disc); not smiling: a straight line. Hat: crown and brim."""
    n, smiling, hat = len(canvas), _has(on, "smiling"), _has(on, "hat")
    lips = torch.tensor([[0.6, 0.08, 0.1]]).expand(n, 3)
    grin = torch.maximum(sdf_circle(x, y - 0.3, 0.32), 0.3 - y)
    paint(canvas, coverage(grin, px) * smiling, lips)
    paint(canvas, coverage(sdf_box(x, y - 0.48, 0.24, 0.0) - 0.055, px) * (1 - smiling), lips)
    crown = sdf_box(x, y + 1.0, 0.56, 0.32) - 0.04
    brim = sdf_box(x, y + 0.66, 0.98, 0.06) - 0.02
    colour = torch.tensor(HATS)[pick(u[:, 2], len(HATS))] * (0.75 + 0.25 * u[:, 3:4])  # (n, 3)
    paint(canvas, coverage(torch.minimum(crown, brim), px) * hat, colour)


def make_faces(n: int, seed: int = 0, size: int = 32) -> Faces:
    """n cartoon faces (n, 3, size, size) in [-1, 1] with attributes (n, A); a pure function of its args."""
    check_int("n", n, 1)
    check_int("size", size, 24)
    u = uniform_table(n, len(ATTRIBUTES) + 10, seed)                        # (n, A + 10)
    on = (u[:, :len(ATTRIBUTES)] < 0.5).float()                              # (n, A) fair coins
    images = chunked(lambda *rows: _render(*rows, size), on, u[:, len(ATTRIBUTES):])
    return Faces(images, on)


def _render(on: torch.Tensor, u: torch.Tensor, size: int) -> torch.Tensor:
    """Faces with attributes on (n, A) and nuisance uniforms u (n, 10): (n, 3, size, size) in [-1, 1]."""
    n = len(on)
    radius = (0.56 + 0.1 * u[:, 4])[:, None, None]                           # (n, 1, 1) face radius
    cx, cy = 0.12 * (2 * u[:, 5] - 1), 0.12 + 0.06 * (2 * u[:, 6] - 1)       # (n,) each
    x, y = pixel_grid(size)                                                  # (1, H, W) each
    x = (x - cx[:, None, None]) / radius                                     # (n, H, W) face units
    y = (y - cy[:, None, None]) / radius
    px = 2 / size / radius                                                   # pixel width in face units
    background = 0.2 + 0.45 * u[:, 7:10]                                     # (n, 3) muted colour
    canvas = background[:, :, None, None].expand(n, 3, size, size).clone()   # (n, 3, H, W)
    _draw_head(canvas, x, y, px, on, u)
    _draw_eyes(canvas, x, y, px, on)
    _draw_mouth_and_hat(canvas, x, y, px, on, u)
    return canvas * 2 - 1
