"""A convolutional autoencoder: an encoder squeezes a digit into a few numbers, a decoder rebuilds it.

Hinton & Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks", Science 313 (2006),
https://www.cs.toronto.edu/~hinton/absps/science.pdf ; the convolutional form follows Masci et al.,
"Stacked Convolutional Auto-Encoders for Hierarchical Feature Extraction" (ICANN 2011).

    x (B, 1, 28, 28) --encoder--> z (B, latent_dim) --decoder--> x_hat (B, 1, 28, 28) in [-1, 1]
    loss = mean squared error between x and x_hat

Nothing forces the codes z to fill any particular region, so decoding a random z is not a way to make new
digits; notebook 01 measures how badly that goes and notebook 02 (the VAE) fixes it.

    model = Autoencoder(AE_PRESETS["AE-B"])
    z = model.encode(x)          # (B, 16)
    x_hat = model.decode(z)      # (B, 1, 28, 28)
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import check_images, conv_decoder, conv_encoder

IMAGE_SHAPE = (1, 28, 28)  # MNIST: one channel, 28 x 28 pixels = 784 numbers


@dataclass
class AutoencoderConfig:
    latent_dim: int = 16   # 784 -> 16 numbers (49x smaller) still rebuilds sharp digits; 2 is enough to plot
    width: int = 32        # channels after the first conv (the second has twice as many): small, fast on a CPU
    hidden: int = 256      # a fully connected layer between the 7x7 feature map and the code; lets a 2-d code
                           # bend the feature space (without it a 2-d bottleneck is a plain linear projection)

    def __post_init__(self):
        for name in ("latent_dim", "width", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"AutoencoderConfig.{name} must be a positive int, got {value!r}")


# Presets by size (the recipe in minigen.recipes picks one per profile); `dataclasses.replace(preset,
# latent_dim=2)` gives the plane variant.
AE_PRESETS = {
    "AE-S": AutoencoderConfig(latent_dim=16, width=16, hidden=128),   # 0.4M parameters: seconds per hundred steps
    "AE-B": AutoencoderConfig(latent_dim=16, width=32, hidden=256),   # 1.7M: ~1 min of training on a laptop CPU
    "AE-L": AutoencoderConfig(latent_dim=16, width=64, hidden=512),   # 6.7M: wider, sharper reconstructions
}


class Autoencoder(nn.Module):
    """Two stride-2 convs down to a 7x7 map, a bottleneck of `latent_dim` numbers, and the mirror image up."""

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.config = config
        w, h, d = config.width, config.hidden, config.latent_dim
        # two stride-2 convs down to a 7x7 map, a hidden layer, the code; the decoder mirrors it (minigen.nn)
        self.encoder = conv_encoder(d, width=w, hidden=h)                    # (B, 1, 28, 28) -> (B, latent_dim)
        self.decoder = conv_decoder(d, width=w, hidden=h, final=nn.Tanh())   # (B, latent_dim) -> (B, 1, 28, 28)
        init_weights(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) images in [-1, 1] -> (B, latent_dim) codes."""
        check_images(x, "Autoencoder.encode")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) codes -> (B, 1, 28, 28) images in [-1, 1]."""
        d = self.config.latent_dim
        if not torch.is_tensor(z) or z.ndim != 2 or z.shape[1] != d:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"Autoencoder.decode expects codes of shape (B, {d}), got {shape}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct: decode(encode(x)), (B, 1, 28, 28) -> (B, 1, 28, 28)."""
        return self.decode(self.encode(x))

    def loss(self, batch) -> dict:
        """Mean squared reconstruction error per pixel; batch is images or (images, labels)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x_hat = self(x)
        mse = F.mse_loss(x_hat, x)
        return {"loss": mse, "psnr": 10 * math.log10(4.0) - 10 * torch.log10(mse.detach())}  # range 2 -> peak^2 4

    def compression(self) -> float:
        """How many times fewer numbers the code holds than the image: 784 / latent_dim."""
        return math.prod(IMAGE_SHAPE) / self.config.latent_dim


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal weights (fan-in, the ReLU gain suits SiLU closely) so activations keep their scale
    through the layers, zero biases, and a last layer scaled down 10x so the untrained decoder outputs
    near-zero (mid-grey) images: the tanh starts in its linear range instead of saturated."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    for m in layers:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    with torch.no_grad():
        layers[-1].weight.mul_(0.1)


@torch.no_grad()
def encode_all(model: Autoencoder, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Codes of many images in eval mode, batch by batch: (N, 1, 28, 28) -> (N, latent_dim)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model.encode(b.to(device)).cpu() for b in images.split(batch_size)])


@torch.no_grad()
def decode_all(model: Autoencoder, codes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Images of many codes in eval mode, batch by batch: (N, latent_dim) -> (N, 1, 28, 28)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model.decode(b.to(device)).cpu() for b in codes.split(batch_size)])


def fit_gaussian(codes: torch.Tensor) -> torch.distributions.MultivariateNormal:
    """A full-covariance Gaussian fitted to (N, D) codes (mean and covariance, a small ridge for safety):
    the simplest density one can put on an autoencoder's codes after training (Ghosh et al. 2019)."""
    if codes.ndim != 2 or codes.shape[0] <= codes.shape[1]:
        raise ValueError(f"fit_gaussian needs (N, D) codes with N > D, got {tuple(codes.shape)}")
    codes = codes.double()
    cov = torch.cov(codes.T) + 1e-6 * torch.eye(codes.shape[1], dtype=codes.dtype)   # (D, D)
    return torch.distributions.MultivariateNormal(codes.mean(0), covariance_matrix=cov)
