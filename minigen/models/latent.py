"""A KL-regularized convolutional autoencoder: the latent space a latent diffusion model (or DiT) works in.

Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022, arXiv 2112.10752
(section 3.1 and appendix G: a fully convolutional encoder to a small spatial latent, a KL term with a tiny weight,
and a scale factor fitted after training so the latents have unit variance).

    x (B, 1, 28, 28) --pad 2--> (B, 1, 32, 32) --encoder--> mean, logvar (B, C, 8, 8)   C = latent_channels
    z = mean + exp(logvar / 2) * eps                        (a sample of q(z|x); the mean at evaluation)
    z --decoder--> (B, 1, 32, 32) --crop--> x_hat (B, 1, 28, 28) in [-1, 1]
    loss = MSE(x_hat, x) + kl_weight * KL(q(z|x) || N(0, I)) per latent number

Unlike the VAE of notebook 02, the KL weight is tiny: the point is not to sample z from the prior (the diffusion
model does the generating) but a latent that keeps the digit's layout on a grid (a transformer reads it as
patches), reconstructs almost perfectly, and stays at a bounded scale. The scale factor (`fit_scale`) then divides
the latents by their standard deviation over the training set, so a diffusion model's unit-variance noise and
the data are on the same scale, as Stable Diffusion's 0.18215 does.

    ae = KLAutoencoder(KLAE_PRESETS["KLAE-B"])
    z = ae.encode_latent(x)        # (B, 4, 8, 8), scaled to unit variance once fit_scale has run
    x_hat = ae.decode_latent(z)    # (B, 1, 28, 28)

Letters: B batch, C channels (latent_channels in the latent, width in the stacks), h x w the latent grid.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ConvResBlock, check_images

IMAGE_SHAPE = (1, 28, 28)  # MNIST
PAD = 2                    # 28 + 2 + 2 = 32: two stride-2 convs then give an 8 x 8 grid, which patches of 2 divide


@dataclass
class KLAutoencoderConfig:
    latent_channels: int = 4    # latent diffusion's 4 channels: 4 x 8 x 8 = 256 numbers per digit (784 / 3)
    width: int = 32             # channels at 16 x 16 (twice as many at 8 x 8): small, fast on a CPU
    blocks: int = 0             # residual blocks at the 8 x 8 level of each half: depth where the grid is small
    kl_weight: float = 1e-3     # per latent number, against MSE per pixel: bounds the latent's scale and smooths
                                # it, far too small to pull q(z|x) to the prior (the VAE's beta is 1)

    def __post_init__(self):
        for name in ("latent_channels", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KLAutoencoderConfig.{name} must be a positive int, got {value!r}")
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 0:
            raise ValueError(f"KLAutoencoderConfig.blocks must be an int >= 0, got {self.blocks!r}")
        if not isinstance(self.kl_weight, (int, float)) or self.kl_weight < 0:
            raise ValueError(f"KLAutoencoderConfig.kl_weight must be a number >= 0, got {self.kl_weight!r}")

    @property
    def latent_shape(self) -> tuple:
        return (self.latent_channels, 8, 8)


KLAE_PRESETS = {
    "KLAE-S": KLAutoencoderConfig(width=16),             # the ci profile: 20k parameters, seconds per hundred steps
    "KLAE-B": KLAutoencoderConfig(width=32),             # 800 steps (under a minute on a laptop CPU) reconstruct
                                                         # test digits at an FD below real-vs-real's floor
    "KLAE-L": KLAutoencoderConfig(width=64, blocks=1),   # the gpu profile: deeper and wider
}


class KLAutoencoder(nn.Module):
    """Two stride-2 convs from 32 x 32 to an 8 x 8 grid of (mean, logvar), and the mirror image up."""

    def __init__(self, config: KLAutoencoderConfig = KLAutoencoderConfig()):
        super().__init__()
        self.config = c = config
        w, C = c.width, c.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1), nn.SiLU(),            # (B, W, 16, 16)
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),                   # (B, 2W, 8, 8)
            *[ConvResBlock(2 * w) for _ in range(c.blocks)], nn.SiLU(),
            nn.Conv2d(2 * w, 2 * C, 3, padding=1),                         # (B, 2C, 8, 8): mean and logvar
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(C, 2 * w, 3, padding=1),                             # (B, 2W, 8, 8)
            *[ConvResBlock(2 * w) for _ in range(c.blocks)], nn.SiLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),  # (B, W, 16, 16)
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1), nn.Tanh(),   # (B, 1, 32, 32) in [-1, 1]
        )
        # 1 / std of the mean latents over the training set (fit_scale); 1 until fitted. A buffer: it is saved.
        self.register_buffer("scale", torch.ones(()))
        init_weights(self)

    # -- the two halves --------------------------------------------------------------------------------
    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) images in [-1, 1] -> mean, logvar of q(z|x), each (B, C, 8, 8) (unscaled)."""
        check_images(x, "KLAutoencoder")
        h = self.encoder(F.pad(x, (PAD,) * 4, value=-1.0))                 # (B, 2C, 8, 8); pad with background
        mean, logvar = h.chunk(2, dim=1)                                   # 2 x (B, C, 8, 8)
        return mean, logvar.clamp(-30.0, 20.0)                             # as LDM: exp() stays finite

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, 8, 8) -> images (B, 1, 28, 28) in [-1, 1]."""
        want = self.config.latent_shape
        if not torch.is_tensor(z) or z.ndim != 4 or tuple(z.shape[1:]) != want:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"KLAutoencoder expects latents of shape (B, {', '.join(map(str, want))}), got {shape}")
        return self.decoder(z)[:, :, PAD:-PAD, PAD:-PAD]                   # (B, 1, 28, 28): crop the padding

    # -- what a latent generator uses: latents at unit scale ---------------------------------------------
    def encode_latent(self, x: torch.Tensor, sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Images -> scaled latents (B, C, 8, 8): the mean of q(z|x) (or a sample of it) times `scale`."""
        mean, logvar = self.moments(x)
        if sample:
            mean = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean * self.scale

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, 8, 8) -> images (B, 1, 28, 28)."""
        return self.decode(z / self.scale)

    @torch.no_grad()
    def fit_scale(self, images: torch.Tensor, batch_size: int = 1000) -> float:
        """Set `scale` to 1 / std of the mean latents of `images` (all numbers pooled), as latent diffusion's
        scale factor; returns it."""
        self.scale.fill_(1.0)
        z = encode_latents(self, images, batch_size)
        self.scale.fill_(1.0 / z.std().item())
        return self.scale.item()

    # -- training ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct through the mean latent: (B, 1, 28, 28) -> (B, 1, 28, 28)."""
        return self.decode(self.moments(x)[0])

    def loss(self, batch) -> dict:
        """MSE per pixel of the reconstruction from a sampled z, plus kl_weight x KL per latent number."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        mean, logvar = self.moments(x)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        mse = F.mse_loss(self.decode(z), x)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()      # KL(q || N(0, I)) per latent number
        return {"loss": mse + self.config.kl_weight * kl, "mse": mse, "kl": kl,
                "psnr": 10 * math.log10(4.0) - 10 * torch.log10(mse.detach())}


def init_weights(model: KLAutoencoder) -> None:
    """Kaiming-normal convolutions (fan-in; the ReLU gain suits SiLU) with zero biases, so activations keep their
    scale through the stacks; the encoder's last conv scaled down 10x so the first latents are small (logvar near
    0, the KL term tame), and the decoder's last 10x so the tanh starts in its linear range."""
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for m in convs:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    with torch.no_grad():
        model.encoder[-1].weight.mul_(0.1)
        model.decoder[-2].weight.mul_(0.1)


@torch.no_grad()
def encode_latents(model: KLAutoencoder, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Scaled mean latents of many images in eval mode: (N, 1, 28, 28) -> (N, C, 8, 8), on the CPU."""
    model.eval()
    device = model.scale.device
    return torch.cat([model.encode_latent(b.to(device)).cpu() for b in images.split(batch_size)])


@torch.no_grad()
def decode_latents(model: KLAutoencoder, latents: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Images of many scaled latents in eval mode: (N, C, 8, 8) -> (N, 1, 28, 28), on the CPU."""
    model.eval()
    device = model.scale.device
    return torch.cat([model.decode_latent(b.to(device)).cpu() for b in latents.split(batch_size)])


__all__ = ["KLAutoencoder", "KLAutoencoderConfig", "KLAE_PRESETS", "init_weights", "encode_latents",
           "decode_latents"]
