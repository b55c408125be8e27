"""Shared building blocks for the model files (DESIGN §1): input checks that name the problem, the sinusoidal
timestep embedding (diffusion U-Net, DiT), and the patch layout helpers (re-exported from minigen.patches,
where notebook 00 teaches them).

Attention and the fused norms live in minigen.kernels (each with its PyTorch reference and dispatcher); the
layers here that use them (`group_norm_silu`) keep their parameters in ordinary PyTorch modules, so a checkpoint
does not depend on which backend ran.
"""
import math
import os

import torch
from torch import nn

from .kernels import groupnorm_silu
from .patches import patchify, tubeletify, unpatchify, untubeletify

__all__ = ["check_images", "check_values", "timestep_embedding", "group_norm_silu", "patchify", "unpatchify", "tubeletify",
           "untubeletify"]


def group_norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """SiLU(norm(x)) with `norm`'s groups, eps and affine parameters, through `minigen.kernels.groupnorm_silu`: one
    fused Triton kernel on a GPU that can run it, the same two PyTorch ops (`F.group_norm`, `F.silu`) elsewhere, so
    on the CPU the numbers are those of `F.silu(norm(x))` exactly. `MINIGEN_KERNELS=reference` turns the kernel off.
    The parameters follow x's dtype (under autocast x may be bf16 while they stay fp32)."""
    weight = None if norm.weight is None else norm.weight.to(x.dtype)
    bias = None if norm.bias is None else norm.bias.to(x.dtype)
    return groupnorm_silu(x, norm.num_groups, weight, bias, eps=norm.eps)


def check_values(x: torch.Tensor) -> bool:
    """Whether to check x's values (ranges, labels): always on the CPU, where it is free; on a GPU only with
    MINIGEN_DEBUG=1, since reading a value back makes the host wait for the GPU, every step. Shape, dtype and
    device checks never read values and always run."""
    return x.device.type == "cpu" or os.environ.get("MINIGEN_DEBUG", "0") not in ("", "0")


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
