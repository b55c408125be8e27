"""Latent arithmetic: attribute vectors, interpolation, and the rates that say whether an edit did what it claims.

Notebook 08. A model that maps images to latents (a VAE's encoder, a GAN's z, a diffusion model's DDIM-inverted
noise) turns "smiling" into a direction: the mean latent of faces with the attribute minus the mean latent of faces
without it (Larsen et al. 2016, arXiv 1512.09300; White 2016, "Sampling Generative Networks", arXiv 1609.04468).
Adding it to a face's latent and decoding should make the face smile and change nothing else. Whether it does is
measured, not looked at, by a judge that reads every attribute (`minigen.models.judge`):

    flip rate          of the edited faces, the share the judge now reads with the target value
    preservation rate  of the edited faces, the share whose other attributes the judge reads as before the edit
    baseline           the same edit along a random direction of the same length

    v = attribute_vector(z, faces.attribute("smiling"))         # (D,)
    z_edit = z + scale * v                                       # then decode and judge
    rates = edit_rates(before, after, index=0, target=1)         # {"flip": ..., "preserve": ...}

"Before" is the judge's reading of the unedited faces as the model returns them (decoded at scale 0), so an edit
of scale 0 has flip rate 0 and preservation 1, and a failure to reconstruct is not counted against the edit.
"""
import torch

from .data.faces import ATTRIBUTES


def _check_latents(z: torch.Tensor, present: torch.Tensor, who: str) -> torch.Tensor:
    if not torch.is_tensor(z) or z.ndim < 2:
        raise ValueError(f"{who} expects latents of shape (N, ...), got "
                         f"{tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}")
    present = torch.as_tensor(present, device=z.device)
    if present.shape != (len(z),):
        raise ValueError(f"{who} expects one 0/1 label per latent: shape ({len(z)},), got {tuple(present.shape)}")
    present = present.bool()
    if present.all() or not present.any():
        raise ValueError(f"{who}: every latent has the same label ({int(present[0])}); the vector needs latents "
                         f"with and without the attribute")
    return present


def attribute_vector(z: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean of the latents with the attribute minus mean of those without: z (N, ...) and present (N,) 0/1 ->
    a vector of z's trailing shape."""
    present = _check_latents(z, present, "attribute_vector")
    return z[present].mean(0) - z[~present].mean(0)


def random_direction(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A direction drawn uniformly on the sphere, scaled to `like`'s norm: the baseline an attribute vector must
    beat (a random edit of the same size changes pixels too, and the judge may read that as a flip)."""
    d = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return d * (like.norm() / d.norm())


def lerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """(1 - t) a + t b. Between two Gaussian latents its midpoint has a smaller norm than either (for independent
    latents in D dimensions, about 1/sqrt(2) of theirs): a region the prior rarely samples."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    return a + t * (b - a)


def slerp(a: torch.Tensor, b: torch.Tensor, t, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the great circle from a to b (Shoemake 1985; White 2016 for latents): the
    angle between them is theta = arccos(<a, b> / (|a| |b|)) and
        slerp(a, b, t) = sin((1 - t) theta) / sin(theta) a + sin(t theta) / sin(theta) b.
    a, b (..., D) over the last dim; t a float or a tensor broadcastable to (..., 1). Where a and b are (nearly)
    parallel sin(theta) -> 0 and it falls back to lerp, which is then the same path."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    t = t.unsqueeze(-1) if t.ndim and t.shape[-1] != 1 else t
    cos = ((a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))
           .clamp_min(eps)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    parallel = sin.abs() < 1e-4
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    out = (torch.sin((1 - t) * theta) / safe) * a + (torch.sin(t * theta) / safe) * b
    return torch.where(parallel, a + t * (b - a), out)


def edit_rates(before: torch.Tensor, after: torch.Tensor, index: int, target: int) -> dict:
    """Judge readings (N, A) in {0, 1} of the same N faces before and after an edit of attribute `index` toward
    `target` (1: add it, 0: remove it) -> {"flip": share of edited faces read with the target value,
    "preserve": share whose other A - 1 attributes all read as before}."""
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(f"edit_rates expects two (N, A) label tensors of one shape, got {tuple(before.shape)} "
                         f"and {tuple(after.shape)}")
    if not 0 <= index < before.shape[1]:
        raise ValueError(f"index must be in [0, {before.shape[1]}), got {index}")
    if target not in (0, 1):
        raise ValueError(f"target must be 0 or 1, got {target!r}")
    others = [k for k in range(before.shape[1]) if k != index]
    flip = (after[:, index] == target).float().mean().item()
    preserve = (after[:, others] == before[:, others]).all(1).float().mean().item()
    return {"flip": flip, "preserve": preserve}


def attribute_index(name: str) -> int:
    """The column of attribute `name` in minigen.data.faces.ATTRIBUTES, with a clear error for a typo."""
    if name not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {name!r}; the faces have {', '.join(ATTRIBUTES)}")
    return ATTRIBUTES.index(name)


# ----------------------------------------------------------------------------------------------------
# MNIST: statistics of a digit's ink, measured, not labelled
# ----------------------------------------------------------------------------------------------------

def ink_area(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) digits in [-1, 1] -> (N,) share of pixels brighter than mid-grey: with the digit's shape
    fixed, a thicker pen covers more pixels."""
    return (images > 0).flatten(1).float().mean(1)


def slant(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) digits in [-1, 1] -> (N,) horizontal shift of the ink per row moved up, from the second moments
    of the ink: -mu_xy / mu_yy with intensities (x + 1) / 2 as weights and y pointing down (so a digit leaning to
    the right is positive; an upright one is near 0). The deskewing statistic of LeCun et al.'s MNIST benchmarks."""
    w = ((images.float() + 1) / 2).clamp(0, 1).flatten(1)                        # (N, H*W) ink weights
    H, W = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=w.dtype), torch.arange(W, dtype=w.dtype), indexing="ij")
    ys, xs = ys.flatten().to(w.device), xs.flatten().to(w.device)                # (H*W,) each
    mass = w.sum(1).clamp_min(1e-6)                                              # (N,)
    cy, cx = (w * ys).sum(1) / mass, (w * xs).sum(1) / mass                      # centroid (N,)
    dy, dx = ys - cy[:, None], xs - cx[:, None]                                  # (N, H*W)
    mu_xy, mu_yy = (w * dx * dy).sum(1) / mass, (w * dy * dy).sum(1) / mass
    return -mu_xy / mu_yy.clamp_min(1e-6)
