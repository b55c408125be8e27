"""Normalizing flows: an invertible network whose decoder is its encoder run backwards, with exact likelihood.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP" (ICLR 2017), https://arxiv.org/abs/1605.08803
Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions" (2018), https://arxiv.org/abs/1807.03039

Change of variables: if z = f(x) is invertible and p(z) = N(0, I), then log p(x) = log p(z) + sum log|det J_layer|.
Every layer below returns (output, logdet per example) from `forward` and undoes itself exactly in `inverse`.

    x (B, 1, 28, 28) in [0, 1) --logit--> squeeze (B, 4, 14, 14) --K x [ActNorm, 1x1 conv, coupling]--> split
      --> squeeze (B, 8, 7, 7) --K x [...]--> z ; half of the 14x14 channels leave at the split as latents

    model = Flow(FLOW_PRESETS["Flow-B"])     # presets by size; minigen.recipes picks one per profile
    zs, logdet = model(y); y_again = model.inverse(zs)   # y: dequantized digits in [0, 1); exact round trip
    x = model.sample(16, temperature=0.7)  # (16, 1, 28, 28) in [-1, 1]
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import check_images

def gaussian_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over all but the batch dimension: (B, ...) -> (B,)."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1)


# --------------------------------------------------------------------------------------------------------
# Toy flows on 2-D points: the idea in its smallest form (notebook 03 builds this same class from scratch).
# --------------------------------------------------------------------------------------------------------
@dataclass
class ToyFlowConfig:
    n_layers: int = 8    # couplings, alternating which coordinate moves; 8 bends a Gaussian into two moons
    hidden: int = 64     # MLP width per coupling: a few thousand weights, trains in seconds on a CPU


class ToyCoupling(nn.Module):
    """Affine coupling on (B, 2): coordinate `keep` passes through and sets scale and shift for the other."""

    def __init__(self, hidden: int, keep: int):
        super().__init__()
        self.keep, self.move = keep, 1 - keep
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, x):
        log_s, t = self.net(x[:, [self.keep]]).chunk(2, dim=1)      # (B, 1) each
        log_s = torch.tanh(log_s)                                    # bounded: at most x e per layer
        y = x.clone()
        y[:, [self.move]] = x[:, [self.move]] * log_s.exp() + t
        return y, log_s.squeeze(1)                                   # the Jacobian is triangular

    def inverse(self, y):
        log_s, t = self.net(y[:, [self.keep]]).chunk(2, dim=1)
        x = y.clone()
        x[:, [self.move]] = (y[:, [self.move]] - t) * torch.tanh(log_s).neg().exp()
        return x


class ToyFlow(nn.Module):
    """A stack of 2-D affine couplings with a standard normal base: x (B, 2) -> z (B, 2)."""

    def __init__(self, config: ToyFlowConfig = ToyFlowConfig()):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(ToyCoupling(config.hidden, keep=i % 2) for i in range(config.n_layers))

    def forward(self, x, return_path: bool = False):
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"ToyFlow expects points of shape (B, 2), got {tuple(x.shape)}")
        logdet, path = x.new_zeros(len(x)), [x]
        for layer in self.layers:
            x, ld = layer(x)
            logdet, path = logdet + ld, path + [x]
        return (x, logdet, path) if return_path else (x, logdet)

    def inverse(self, z):
        return _undo(self.layers, z)

    def log_prob(self, x):
        z, logdet = self(x)
        return gaussian_log_prob(z) + logdet

    def loss(self, batch):
        return {"loss": -self.log_prob(batch).mean()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None):
        return self.inverse(torch.randn(n, 2, generator=generator).to(next(self.parameters())))


# --------------------------------------------------------------------------------------------------------
# The image flow: Glow's step (ActNorm, invertible 1x1 conv, affine coupling) in RealNVP's multi-scale stack.
# --------------------------------------------------------------------------------------------------------
@dataclass
class FlowConfig:
    image_shape: tuple = (1, 28, 28)  # (C, H, W); H and W must divide by 2 ** n_scales
    n_scales: int = 2           # squeeze + steps per scale; 28 -> 14 -> 7, and half the channels leave per split
    steps: int = 6              # Glow steps per scale: depth buys bits/dim, each step is three small layers
    checker_steps: int = 0      # RealNVP checkerboard couplings before each squeeze (0: Glow's channel-only)
    width: int = 64             # channels inside each coupling's conv net: the model's main cost on a CPU
    logit_alpha: float = 0.05   # RealNVP's logit(alpha + (1 - 2 alpha) y) pre-map; 0 uses y - 1/2 instead
    learn_prior: bool = True    # Glow's split prior: factored-out channels get a mean/scale from the kept half

    def __post_init__(self):
        c, h, w = self.image_shape
        if h % 2 ** self.n_scales or w % 2 ** self.n_scales:
            raise ValueError(f"image_shape {tuple(self.image_shape)}: H and W must divide by 2 ** n_scales "
                             f"= {2 ** self.n_scales} (each scale squeezes 2 x 2 pixels into channels)")
        if min(c, self.n_scales, self.steps, self.width) < 1 or self.checker_steps < 0:
            raise ValueError(f"FlowConfig needs positive sizes, got {self}")
        if not 0 <= self.logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in [0, 0.5), got {self.logit_alpha}")


# Presets by size (minigen.recipes picks one per profile).
FLOW_PRESETS = {
    "Flow-S": FlowConfig(n_scales=2, steps=2, width=16),     # smoke test: a few steps train in seconds
    "Flow-B": FlowConfig(n_scales=2, steps=4, width=48),     # 3300 steps of 64 at lr 2e-3: 1.74 bits/dim, ~5 CPU-min
    "Flow-L": FlowConfig(n_scales=2, steps=12, width=128),   # deeper and wider: the course checkpoint
}


def squeeze(x):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2 x 2 block of pixels becomes 4 channels (no logdet)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs even H and W, got {h} x {w} (shape {tuple(x.shape)})")
    x = x.view(b, c, h // 2, 2, w // 2, 2)                      # (B, C, H/2, 2, W/2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)  # (B, 4C, H/2, W/2)


def unsqueeze(x):
    """(B, 4C, H, W) -> (B, C, 2H, 2W), the exact inverse of `squeeze`."""
    b, c4, h, w = x.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze needs channels divisible by 4, got {c4}")
    x = x.view(b, c4 // 4, 2, 2, h, w)                          # (B, C, 2, 2, H, W)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)  # (B, C, 2H, 2W)


class ActNorm(nn.Module):
    """Per-channel affine y = (x + bias) * exp(log_scale), initialised from the first batch to give zero mean
    and unit variance per channel (Glow §3.1): a normalisation that is invertible and batch-size free."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)                  # (1, C, 1, 1)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x):
        if not self.initialized:
            self.initialize(x)
        logdet = x.shape[2] * x.shape[3] * self.log_scale.sum()
        return (x + self.bias) * self.log_scale.exp(), logdet.expand(len(x))

    def inverse(self, y):
        return y * self.log_scale.neg().exp() - self.bias


class InvConv1x1(nn.Module):
    """A learned channel mixing y = W x at every pixel (Glow §3.2); logdet = H W log |det W|.
    W starts as a random rotation (det 1). Glow's LU form makes det O(C); at C <= 16 slogdet is cheap."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def forward(self, x):
        logdet = x.shape[2] * x.shape[3] * torch.linalg.slogdet(self.weight)[1]
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(len(x))

    def inverse(self, y):
        w_inv = torch.linalg.inv(self.weight.double()).to(y.dtype)  # double: keeps x = W^-1 W x to ~1e-7
        return F.conv2d(y, w_inv[:, :, None, None])


class Coupling(nn.Module):
    """Affine coupling (RealNVP §3.3): part `a` passes unchanged and predicts scale and shift for part `b`,
        y_b = x_b * exp(log_s(x_a)) + t(x_a),   logdet = sum log_s,   inverse x_b = (y_b - t) * exp(-log_s).
    mask "channel" splits channels in half (after a squeeze); "checkerboard" alternates pixels (any C)."""

    def __init__(self, channels: int, width: int, mask: str = "channel", parity: int = 0):
        super().__init__()
        if mask not in ("channel", "checkerboard"):
            raise ValueError(f"mask must be 'channel' or 'checkerboard', got {mask!r}")
        if mask == "channel" and channels < 2:
            raise ValueError("a channel coupling needs at least 2 channels; use mask='checkerboard'")
        self.mask, self.parity, self.channels = mask, parity, channels
        c_in = channels // 2 if mask == "channel" else channels
        c_out = channels - c_in if mask == "channel" else channels
        self.net = nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 1), nn.ReLU(),
                                 nn.Conv2d(width, 2 * c_out, 3, padding=1))
        self.scale = nn.Parameter(torch.ones(1, c_out, 1, 1))        # log_s = scale * tanh(.) stays bounded

    def _params(self, x):
        """log_s and t for every entry of x, computed from the passing part only (zero on the passing part)."""
        if self.mask == "channel":
            a = x[:, :self.channels // 2]                              # passes; the 1x1 convs mix channels
            log_s, t = self.net(a).chunk(2, dim=1)                      # (B, C - C/2, H, W) each
            zeros = torch.zeros_like(a)
            return torch.cat([zeros, self.scale * torch.tanh(log_s)], 1), torch.cat([zeros, t], 1)
        h, w = x.shape[2:]
        grid = torch.arange(h, device=x.device)[:, None] + torch.arange(w, device=x.device)  # (H, W)
        m = ((grid + self.parity) % 2).to(x.dtype)[None, None]          # (1, 1, H, W): 1 where x passes
        log_s, t = self.net(x * m).chunk(2, dim=1)                      # (B, C, H, W) each
        return (1 - m) * self.scale * torch.tanh(log_s), (1 - m) * t

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"Coupling expects (B, {self.channels}, H, W), got {tuple(x.shape)}")
        log_s, t = self._params(x)
        return x * log_s.exp() + t, log_s.flatten(1).sum(1)

    def inverse(self, y):
        log_s, t = self._params(y)                                      # the passing part is unchanged in y
        return (y - t) * log_s.neg().exp()


class Split(nn.Module):
    """Factor out half the channels as latents (RealNVP's multi-scale). With a learned prior (Glow) the
    factored half is standardised by a mean and scale predicted from the kept half: eps = (x_b - mu) / sigma,
    an affine bijection with logdet -sum log sigma; eps is then scored under N(0, I)."""

    def __init__(self, channels: int, learn_prior: bool):
        super().__init__()
        self.keep = channels // 2
        self.prior = nn.Conv2d(self.keep, 2 * (channels - self.keep), 3, padding=1) if learn_prior else None

    def _stats(self, a):
        if self.prior is None:
            return a.new_zeros(1, 1, 1, 1), a.new_zeros(1, 1, 1, 1)      # a fixed N(0, I) prior
        return self.prior(a).chunk(2, dim=1)                            # mu, log_sigma: (B, C - C/2, H, W)

    def forward(self, x):
        a, b = x[:, :self.keep], x[:, self.keep:]
        mu, log_sigma = self._stats(a)
        return a, (b - mu) * log_sigma.neg().exp(), -log_sigma.flatten(1).sum(1)

    def inverse(self, a, eps):
        mu, log_sigma = self._stats(a)
        return torch.cat([a, eps * log_sigma.exp() + mu], dim=1)


class Flow(nn.Module):
    """The multi-scale image flow. Works on dequantized images y in [0, 1)^(C, H, W); `loss` and
    `bits_per_dim` take course images in [-1, 1] and dequantize them (uniform noise, Theis et al. 2016)."""

    def __init__(self, config: FlowConfig = FlowConfig()):
        super().__init__()
        self.config = config
        (c, h, w), width = config.image_shape, config.width
        self.checker, self.scales, self.splits = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self._latents = []                                              # (C, H, W) of each latent, finest first
        for i in range(config.n_scales):
            self.checker.append(nn.ModuleList(
                m for k in range(config.checker_steps)
                for m in (ActNorm(c), Coupling(c, width, "checkerboard", parity=k % 2))))
            c, h, w = 4 * c, h // 2, w // 2
            self.scales.append(nn.ModuleList(
                m for k in range(config.steps) for m in (ActNorm(c), InvConv1x1(c), Coupling(c, width, "channel"))))
            if i < config.n_scales - 1:
                self.splits.append(Split(c, config.learn_prior))
                self._latents.append((c - c // 2, h, w))
                c = c // 2
        self._latents.append((c, h, w))
        init_weights(self)

    def _pre(self, y):
        """[0, 1) -> the real line: RealNVP's logit map (or a shift), with its log-determinant."""
        a = self.config.logit_alpha
        if a == 0:
            return y - 0.5, y.new_zeros(len(y))
        s = a + (1 - 2 * a) * y
        x = torch.log(s) - torch.log1p(-s)
        return x, (math.log(1 - 2 * a) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)

    def _post(self, x):
        a = self.config.logit_alpha
        return x + 0.5 if a == 0 else (torch.sigmoid(x) - a) / (1 - 2 * a)

    def forward(self, y):
        """y (B, C, H, W) -> (list of latents, one per scale, finest first; logdet (B,))."""
        check_images(y, "Flow", self.config.image_shape)
        x, logdet = self._pre(y)
        zs = []
        for i, steps in enumerate(self.scales):
            x, logdet = _run(self.checker[i], x, logdet)
            x, logdet = _run(steps, squeeze(x), logdet)               # squeeze: (B, 4C, H/2, W/2)
            if i < len(self.splits):
                x, eps, ld = self.splits[i](x)                         # keep (B, 2C, ..), emit eps
                zs, logdet = zs + [eps], logdet + ld
        return zs + [x], logdet

    def inverse(self, zs):
        """The generator: exactly the encoder's layers undone in reverse order."""
        x = zs[-1]
        for i in reversed(range(len(self.scales))):
            if i < len(self.splits):
                x = self.splits[i].inverse(x, zs[i])
            x = _undo(self.checker[i], unsqueeze(_undo(self.scales[i], x)))  # unsqueeze: (B, C, 2H, 2W)
        return self._post(x)

    def latent_shapes(self):
        return list(self._latents)

    def log_prob(self, y):
        """Exact log-density (nats) of dequantized images y in [0, 1): log p(z) + sum log|det J|."""
        zs, logdet = self(y)
        return sum(gaussian_log_prob(z) for z in zs) + logdet

    def loss(self, batch):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        bpd = self.bits_per_dim(images).mean()
        return {"loss": bpd, "bpd": bpd.detach()}

    def bits_per_dim(self, images, generator: torch.Generator | None = None):
        """Per-image bits/dim of 8-bit images given in [-1, 1]: dequantize to y = (k + u) / 256, score, and convert
        nats to bits per 8-bit level, (nll - dims log(1/256)) / (dims ln 2) over the dims = C*H*W values: the formula
        of minigen.metrics.bits_per_dim(nll, dims, pixel_scale=1/256), written out so the model needs no metrics."""
        y = dequantize(images, generator)
        nll, dims = -self.log_prob(y), y[0].numel()
        return (nll - dims * math.log(1 / 256)) / (dims * math.log(2.0))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None):
        """n images (n, C, H, W) in [-1, 1]: z ~ N(0, temperature^2 I), run the flow backwards, quantize to 8 bits."""
        p = next(self.parameters())
        zs = [temperature * torch.randn(n, *shape, generator=generator).to(p) for shape in self._latents]
        return quantize(self.inverse(zs))


def _run(layers, x, logdet):
    for layer in layers:
        x, ld = layer(x)
        logdet = logdet + ld
    return x, logdet


def _undo(layers, y):
    for layer in reversed(layers):
        y = layer.inverse(y)
    return y


def dequantize(images, generator: torch.Generator | None = None):
    """Course images in [-1, 1] (k / 255 mapped linearly) -> y = (k + u) / 256 in [0, 1), u ~ U[0, 1)."""
    k = torch.round((images + 1) * 127.5)                             # the original uint8 levels 0..255
    u = torch.rand(images.shape, generator=generator).to(images)    # drawn on the CPU: same noise on any device
    return (k + u) / 256


def quantize(y):
    """The inverse of dequantization: y in [0, 1) -> the 8-bit level floor(256 y) -> course range [-1, 1]."""
    return (torch.floor(y * 256).clamp(0, 255) / 255) * 2 - 1


def init_weights(model: nn.Module) -> None:
    """Start every flow at (nearly) the identity, so the first steps are stable (Glow §3.3):
    the last conv of each coupling net and each split prior are zero, so log_s = t = 0 and mu = log_sigma = 0;
    ActNorm then sets itself from the first batch and each 1x1 conv starts as a rotation."""
    for module in model.modules():
        last = module.net[-1] if isinstance(module, Coupling) else getattr(module, "prior", None)
        if isinstance(module, (Coupling, Split)) and last is not None:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)


def evaluate_bits_per_dim(model: Flow, images: torch.Tensor, batch_size: int = 500, seed: int = 0) -> float:
    """Mean bits/dim over a set of images (e.g. the 10k test digits), with seeded dequantization noise."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return torch.cat([model.bits_per_dim(images[i:i + batch_size].to(next(model.parameters()).device), g)
                          for i in range(0, len(images), batch_size)]).mean().item()

