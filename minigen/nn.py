"""Shared building blocks for the model files (DESIGN §1): input checks that name the problem, the sinusoidal
timestep embedding (diffusion U-Net, DiT), and the patch layout helpers (re-exported from minigen.patches,
where notebook 00 teaches them).

Attention and the fused norms live in minigen.kernels (each with its PyTorch reference and dispatcher);
models call them from there.
"""
import math

import torch

from .patches import patchify, tubeletify, unpatchify, untubeletify

__all__ = ["check_images", "timestep_embedding", "patchify", "unpatchify", "tubeletify", "untubeletify"]


def check_images(x, who: str, shape: tuple = (1, 28, 28)) -> torch.Tensor:
    """Raise a clear error unless x is a float batch of images (B, *shape); return x.

    `who` names the caller in the message, e.g. "Autoencoder.encode expects images of shape (B, 1, 28, 28)".
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{who} expects a torch.Tensor of images, got {type(x).__name__}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        hint = " (add a channel dimension: x.unsqueeze(1))" if x.ndim == len(shape) else ""
        raise ValueError(f"{who} expects images of shape (B, {', '.join(map(str, shape))}), "
                         f"got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects float images, got dtype {x.dtype}")
    return x


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoids at geometric frequencies (the Transformer's positions, DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]                                     # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)                 # (B, dim)
