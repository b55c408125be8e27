"""A small U-Net denoiser for diffusion on MNIST: eps = model(x_t, t, y).

Papers: Ronneberger et al. 2015, "U-Net", arXiv 1505.04597 (the encoder-decoder with skips); Ho et al. 2020,
"Denoising Diffusion Probabilistic Models", arXiv 2006.11239 (sinusoidal timestep embedding, GroupNorm
residual blocks, attention at the lowest resolution); Dhariwal & Nichol 2021, arXiv 2105.05233 (scale-shift
conditioning, zero-initialised output layers); Ho & Salimans 2022, arXiv 2207.12598 (a null class label for
classifier-free guidance).

The one trick for CPU budgets: pixel-unshuffle. A 28x28x1 digit is rearranged, losslessly, into a 14x14x4
tensor (each 2x2 patch becomes 4 channels), the U-Net works at 14x14 and 7x7, and pixel-shuffle puts the
predicted noise back at 28x28. Convolutions cost H*W, so this is 4x cheaper than working at 28x28 with the
same width, and a 3x3 kernel now sees a 6x6 pixel neighbourhood.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import check_values, group_norm_silu, timestep_embedding


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
    # ci: proves every cell runs; samples are blobs
    "ci": UNetConfig(width=16, blocks=1, attention=False),
    # cpu: 0.55M parameters, ~0.3 s per batch-128 step on one core: ~1500 steps in 5 minutes on 2 cores
    "cpu": UNetConfig(width=32, blocks=1, attention=True),
    # gpu: the course checkpoint (about 10 minutes on a T4), small enough for a <= 4 MB fp16 file
    "gpu": UNetConfig(width=48, blocks=2, attention=True, dropout=0.1),
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
    """Multi-head self-attention over the H*W positions of a feature map, residual."""

    def __init__(self, channels: int, groups: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm, self.qkv = nn.GroupNorm(groups, channels), nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)  # (B, 3, H, D, S)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                                     # 3 x (B, H, S, D)
        h = F.scaled_dot_product_attention(q, k, v)                                    # (B, H, S, D)
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))                   # (B, C, H, W)


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
        h = self.conv_in(F.pixel_unshuffle(x, self.config.unshuffle))                  # (B, C0, H/2, W/2)
        skips = []
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)                                             # (B, C_i+1, H_i/2, W_i/2)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i in reversed(range(len(self.up))):
            h = torch.cat([h, skips.pop()], dim=1)                                     # (B, 2 C_i, H_i, W_i)
            for blk in self.up[i]:
                h = blk(h, emb)
            if i > 0:
                h = self.upsample[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, C_i-1, 2H_i, 2W_i)
        out = self.conv_out(group_norm_silu(self.norm_out, h))                         # (B, C*r^2, H/r, W/r)
        return F.pixel_shuffle(out, self.config.unshuffle)                             # (B, C, H, W)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def course_checkpoint():
    """Recipe for the course checkpoint "diffusion" (DESIGN section 10): the gpu preset, class-conditional with
    label dropout, trained at the gpu profile; returns (EMA model, info with its measured classifier-IS)."""
    from minigen import metrics
    from minigen.data import load_mnist
    from minigen.diffusion import Diffusion, ddim_sample, make_schedule
    from minigen.train import Trainer, TrainConfig

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_mnist("train")
    model = UNet(UNET_PRESETS["gpu"])
    diffusion = Diffusion(model, make_schedule("cosine", 1000), num_classes=10, p_uncond=0.1)
    config = TrainConfig(steps=8000, batch_size=256, lr=2e-3, warmup=200, cosine=True, ema_decay=0.999)
    trainer = Trainer(diffusion, (data.images, data.labels), config, device=device).fit()
    ema = trainer.ema.model.eval()
    y = torch.arange(5000, device=device) % 10
    x = ddim_sample(ema, diffusion.schedule, (5000, 1, 28, 28), steps=50, y=y, guidance=2.0, null_label=10,
                    clip_x0=1.0, generator=torch.Generator(device).manual_seed(0), device=device)
    score = metrics.classifier_score(x)
    return ema.cpu(), {"steps": config.steps, "metric": round(score, 3), "metric_name": "classifier-IS, DDIM-50, CFG 2"}
