"""A small U-Net denoiser for diffusion on MNIST: eps = model(x_t, t, y).

Papers: Ronneberger et al. 2015, "U-Net", arXiv 1505.04597 (the encoder-decoder with skips); Ho et al. 2020,
"Denoising Diffusion Probabilistic Models", arXiv 2006.11239 (sinusoidal timestep embedding, GroupNorm
residual blocks, attention at the lowest resolution); Dhariwal & Nichol 2021, arXiv 2105.05233 (scale-shift
conditioning, zero-initialised output layers); Ho & Salimans 2022, arXiv 2207.12598 (a null class label for
classifier-free guidance).

The one trick for CPU budgets: pixel-unshuffle. A 28x28x1 digit is rearranged, losslessly, into a 14x14x4
tensor (each 2x2 patch becomes 4 channels), the U-Net works at 14x14 and 7x7, and pixel-shuffle puts the
predicted noise back at 28x28. Convolutions cost h*w, so this is 4x cheaper than working at 28x28 with the
same width, and a 3x3 kernel now sees a 6x6 pixel neighbourhood.

Letters in the shape comments: B batch, C channels, h x w the feature map's height and width, S = h*w spatial
tokens, H attention heads, D head dim. The presets are named by size; `minigen.recipes` picks one per profile
and wraps the U-Net in `minigen.diffusion.Diffusion` with its schedule.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import attention
# num_parameters is re-exported: notebook 04 imports it from here
from ..nn import check_values, group_norm_silu, num_parameters, timestep_embedding  # noqa: F401


@dataclass
class UNetConfig:
    in_channels: int = 1           # MNIST is grey
    image_size: int = 28           # MNIST digits
    unshuffle: int = 2             # 28x28x1 -> 14x14x4: 4x fewer conv positions for the same width
    width: int = 32                # channels at the top level: the throughput/quality knob for CPU budgets
    mults: tuple = (1, 2)          # channel multiplier per level: 14x14 then 7x7 after unshuffling
    blocks: int = 1                # residual blocks per level on the way down (and up)
    attention: bool = True         # one self-attention layer at the lowest level (49 tokens: cheap)
    num_classes: int | None = 10   # digits; label num_classes is the null label for guidance; None: unconditional
    dropout: float = 0.0           # small models under-fit in minutes; DDPM used 0.1 for long runs
    groups: int = 8                # GroupNorm groups; divides every width used by the presets


UNET_PRESETS = {
    # S: 0.14M parameters, no attention; proves every cell runs (the ci recipe); samples are blobs
    "UNet-S": UNetConfig(width=16, blocks=1, attention=False),
    # B: 0.55M parameters, ~0.3 s per batch-128 step on one core: ~1500 steps in 5 minutes on 2 cores (cpu recipe)
    "UNet-B": UNetConfig(width=32, blocks=1, attention=True),
    # L: 1.76M parameters, the course checkpoint (about 10 minutes on a T4), small enough for a <= 4 MB fp16 file
    "UNet-L": UNetConfig(width=48, blocks=2, attention=True, dropout=0.1),
    # F: notebook 08's faces (32x32 RGB -> 16x16x12 after unshuffling, attention on the 8x8 level), unconditional:
    # the notebook DDIM-inverts faces to noise and edits the noise, so no label may steer the regeneration
    "UNet-F": UNetConfig(in_channels=3, image_size=32, width=32, blocks=1, attention=True, num_classes=None),
    "UNet-F-L": UNetConfig(in_channels=3, image_size=32, width=64, blocks=2, attention=True, num_classes=None,
                           dropout=0.1),   # the gpu profile's
}


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice; the conditioning vector sets a per-channel scale and shift in between. The first
    GroupNorm-SiLU is one fused kernel on a GPU (`minigen.nn.group_norm_silu`); the second has the modulation
    between its two ops, so it stays three PyTorch ops."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(group_norm_silu(self.norm1, x))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)      # 2 x (B, C, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Attention(nn.Module):
    """Multi-head self-attention over the S = h*w positions of a feature map, residual."""

    def __init__(self, channels: int, groups: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm, self.qkv = nn.GroupNorm(groups, channels), nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, h * w)  # (B, 3, H, D, S)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                                     # 3 x (B, H, S, D)
        out = attention(q, k, v)                                   # (B, H, S, D): minigen.kernels' dispatcher
        return x + self.out(out.transpose(-1, -2).reshape(B, C, h, w))                 # (B, C, h, w)


class UNet(nn.Module):
    """eps_hat = UNet(x_t, t, y): a two-level U-Net on pixel-unshuffled images, conditioned on t (and y)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = c = config
        side = c.image_size // c.unshuffle
        if c.image_size % c.unshuffle or side % 2 ** (len(c.mults) - 1):
            raise ValueError(f"image_size {c.image_size} / unshuffle {c.unshuffle} must be divisible by "
                             f"2^(levels - 1) = {2 ** (len(c.mults) - 1)}")
        chans = [c.width * m for m in c.mults]
        emb_dim = 4 * c.width
        self.time_mlp = nn.Sequential(nn.Linear(c.width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(c.num_classes + 1, emb_dim) if c.num_classes else None
        c_io = c.in_channels * c.unshuffle ** 2
        self.conv_in = nn.Conv2d(c_io, chans[0], 3, padding=1)
        block = lambda a, b: ResBlock(a, b, emb_dim, c.groups, c.dropout)  # noqa: E731
        self.down = nn.ModuleList(nn.ModuleList(block(ch, ch) for _ in range(c.blocks)) for ch in chans)
        self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        self.mid1, self.mid2 = block(chans[-1], chans[-1]), block(chans[-1], chans[-1])
        self.mid_attn = Attention(chans[-1], c.groups) if c.attention else nn.Identity()
        self.up = nn.ModuleList(nn.ModuleList([block(2 * ch, ch)] + [block(ch, ch) for _ in range(c.blocks - 1)])
                                for ch in chans)
        self.upsample = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.norm_out, self.conv_out = nn.GroupNorm(c.groups, chans[0]), nn.Conv2d(chans[0], c_io, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default init everywhere, except zeros on the last conv of every residual branch, the
        attention output and the network output: each block starts as the identity and the network predicts
        eps = 0 (loss 1 at step 0), the "zero module" of Dhariwal & Nichol, which keeps early training stable."""
        zero = [m.conv2 for m in self.modules() if isinstance(m, ResBlock)]
        zero += [m.out for m in self.modules() if isinstance(m, Attention)] + [self.conv_out]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check(self, x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor | None:
        c = self.config
        want = (c.in_channels, c.image_size, c.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"UNet expects x of shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet expects t of shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        if self.label_emb is None:
            if y is not None:
                raise ValueError("this UNet is unconditional (num_classes=None) but labels y were given")
            return None
        if y is None:
            return torch.full((x.shape[0],), c.num_classes, dtype=torch.long, device=x.device)  # the null label
        bad_range = check_values(y) and y.numel() and (y.min() < 0 or y.max() > c.num_classes)
        if y.shape != (x.shape[0],) or y.dtype != torch.long or bad_range:
            raise ValueError(f"y must be (B,) = ({x.shape[0]},) int64 labels in [0, {c.num_classes}] "
                             f"({c.num_classes} = no label), got {tuple(y.shape)} {y.dtype}")
        return y

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = self._check(x, t, y)
        emb = self.time_mlp(timestep_embedding(t, self.config.width))                 # (B, E)
        if y is not None:
            emb = emb + self.label_emb(y)
        h = self.conv_in(F.pixel_unshuffle(x, self.config.unshuffle))                  # (B, C_0, image_size/r, ...)
        skips = []
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)                                             # (B, C_i+1, h_i/2, w_i/2)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i in reversed(range(len(self.up))):
            h = torch.cat([h, skips.pop()], dim=1)                                     # (B, 2 C_i, h_i, w_i)
            for blk in self.up[i]:
                h = blk(h, emb)
            if i > 0:
                h = self.upsample[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, C_i-1, 2h_i, 2w_i)
        out = self.conv_out(group_norm_silu(self.norm_out, h))                         # (B, C_in*r^2, h, w)
        return F.pixel_shuffle(out, self.config.unshuffle)                             # (B, C_in, r*h, r*w)


