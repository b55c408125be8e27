"""A generative adversarial network: a generator trained to fool a learned judge.

Goodfellow et al., "Generative Adversarial Nets" (2014), https://arxiv.org/abs/1406.2661 (the game, and the
non-saturating generator loss); Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep
Convolutional GANs" (DCGAN, 2015), https://arxiv.org/abs/1511.06434 (the conv pair, Adam with beta1 = 0.5);
Mescheder, Geiger & Nowozin, "Which Training Methods for GANs do actually Converge?" (2018),
https://arxiv.org/abs/1801.04406 (the R1 penalty); Miyato & Koyama, "cGANs with Projection Discriminator" (2018),
https://arxiv.org/abs/1802.05637 ; Karras et al., StyleGAN2 (2019), https://arxiv.org/abs/1912.04958 (lazy R1);
Brock et al., BigGAN (2018), https://arxiv.org/abs/1809.11096 (the truncation trick); Wang et al.,
"Diffusion-GAN" (2022), https://arxiv.org/abs/2206.02262 (the judge sees both sides through adaptive noise).

    z ~ N(0, I) (B, z_dim) [, label y] --generator--> fake images (B, K, S, S) in [-1, 1]
    real or fake image [, y] --discriminator--> one logit per image: "how real does this look?"
    discriminator: minimise softplus(-D(real)) + softplus(D(fake))       (cross-entropy, real = 1, fake = 0)
    generator:     minimise softplus(-D(fake))                           (non-saturating: -log D(G(z)))

The discriminator is a learned judge, like a reward model in RLHF, except that it is retrained at every step and
told that everything the generator makes is fake. The generator never sees a real image: all it learns comes
through the judge's gradient.

    gan = GAN(GAN_PRESETS["GAN-B"])            # presets by size; minigen.recipes picks one per profile
    Trainer(gan, (images, labels), recipe("gan").train).fit()   # several players: optimizers() + train_step()
    gan.sample(64)                              # (64, 1, 28, 28) in [-1, 1]
    gan.sample(64, y=torch.arange(64) % 10)     # class-conditional presets draw the digit asked for
    GAN(GAN_PRESETS["GAN-F"]).sample(64)        # (64, 3, 32, 32): the same pair on notebook 08's colour faces

The hybrids of notebook 05 reuse the pieces here: `Discriminator` judges a VAE's decodes (VAE-GAN) or a flow's
samples (Flow-GAN); `AdaptiveNoise` is Diffusion-GAN's noise level that rises when the judge overfits.
Letters in the shape comments: B batch, C channels (config.width), K image channels (config.channels), S the
image side (config.image_size: 28 for MNIST, 32 for the faces), F the judge's flattened features.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import check_images, check_values

LOSSES = ("non-saturating", "saturating", "hinge")


@dataclass
class GANConfig:
    z_dim: int = 64              # the noise the generator reads; 64 numbers is ample for MNIST's variation
    width: int = 64              # channels at S/2 x S/2 in both players (twice as many at S/4 x S/4): DCGAN's shape
    channels: int = 1            # image channels: MNIST is grey; 3 for colour (notebook 08's faces)
    image_size: int = 28         # image side: MNIST's 28; a multiple of 4, as both players halve it twice (28 -> 7)
    num_classes: int = 0         # 0: unconditional; 10: the generator embeds the digit, the judge projects on it
    loss: str = "non-saturating"  # or "saturating" (the 2014 minimax form, for the notebook's comparison), "hinge"
    r1_gamma: float = 1.0        # weight of the R1 penalty on the judge's gradient at real images; 0 turns it off.
                                 # Mescheder et al. show it makes the game converge locally; 1 suits [-1, 1] pixels
    r1_every: int = 4            # lazy R1 (StyleGAN2): the penalty every k judge steps, scaled by k: same effect,
                                 # a quarter of the double-backward cost
    noise_levels: int = 0        # Diffusion-GAN: > 0 conditions the judge on a noise level t < noise_levels and
                                 # diffuses both real and fake images to it (AdaptiveNoise sets the range)

    def __post_init__(self):
        for name in ("z_dim", "width", "r1_every", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GANConfig.{name} must be a positive int, got {value!r}")
        for name in ("num_classes", "noise_levels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"GANConfig.{name} must be an int >= 0, got {value!r}")
        if not isinstance(self.image_size, int) or self.image_size < 4 or self.image_size % 4:
            raise ValueError(f"GANConfig.image_size must be a positive multiple of 4 (both players halve it twice), "
                             f"got {self.image_size!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"GANConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.r1_gamma < 0:
            raise ValueError(f"GANConfig.r1_gamma must be >= 0, got {self.r1_gamma!r}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(K, S, S): the shape of one image the generator makes and the judge reads."""
        return (self.channels, self.image_size, self.image_size)


# Presets by size (minigen.recipes picks one per profile); "-C" adds the digit label to both players; "-F" is for the
# 32 x 32 colour faces (minigen.data.make_faces), the rest for MNIST.
GAN_PRESETS = {
    "GAN-S": GANConfig(z_dim=32, width=16),                    # smoke test: a few hundred steps in seconds
    "GAN-B": GANConfig(z_dim=64, width=32),                    # the cpu model: a few thousand steps in minutes
    "GAN-L": GANConfig(z_dim=128, width=64),                   # the gpu model
    # the projection judge needs a stronger R1: at gamma = 1 each class collapsed to a few digits (cpu trial, 2000
    # steps: recall 0.00 at lr 1e-3 and 0.03 at 2e-3); gamma = 10 kept recall at 0.29 and FD 93 at n = 2000
    "GAN-S-C": GANConfig(z_dim=32, width=16, num_classes=10, r1_gamma=10.0),
    "GAN-B-C": GANConfig(z_dim=64, width=32, num_classes=10, r1_gamma=10.0),
    "GAN-L-C": GANConfig(z_dim=128, width=64, num_classes=10, r1_gamma=10.0),
    # "-F": notebook 08's colour faces at 32 x 32 (8 x 8 maps). z_dim 64 covers their ~15 factors (5 attribute coins,
    # skin, hair, hat and background colours, position, size) with room to spare. Width 32 (GAN-B's) on a CPU:
    # 3000 steps took 112 s on 2 cores, and the attribute judge read each attribute in 38-51 % of its samples
    # (the data: 50 %); width 64 draws finer eyes and glasses at 3x the cost, the gpu preset affords 128
    "GAN-F": GANConfig(z_dim=64, width=32, channels=3, image_size=32),
    "GAN-F-L": GANConfig(z_dim=128, width=128, channels=3, image_size=32),  # the gpu model: 3.2M parameters
}


# ----------------------------------------------------------------------------------------------------
# The losses of the lecture, written once on logits (the notebook's exercises re-derive two of them).
# ----------------------------------------------------------------------------------------------------

def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "non-saturating"):
    """The judge's loss. Cross-entropy with real = 1, fake = 0 (both GAN losses share it):
    -log sigmoid(D(real)) - log(1 - sigmoid(D(fake))) = softplus(-D(real)) + softplus(D(fake)), batch means;
    hinge: relu(1 - D(real)) + relu(1 + D(fake))."""
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The generator's loss on the judge's logits of its fakes.

    saturating (the minimax game as written): minimise log(1 - sigmoid(D)) = -softplus(D). When the judge wins
        (D very negative) its gradient sigmoid(D) vanishes: the generator stops learning exactly when it is worst.
    non-saturating: minimise -log sigmoid(D) = softplus(-D); gradient -(1 - sigmoid(D)) is largest when D wins.
    hinge: minimise -D (Lim & Ye 2017; used with a hinge judge).
    """
    if kind == "saturating":
        return -F.softplus(fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


def r1_penalty(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mescheder et al.'s R1: E ||grad_x D(x)||^2 over real images x (which must require grad), as a scalar.
    Multiply by gamma / 2. Built with create_graph so the penalty's own gradient reaches the judge's weights."""
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)   # (B, K, S, S), as images
    return grad.square().flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------------------------------
# The two players (DCGAN's shape: two stride-2 layers, S -> S/2 -> S/4; 28 -> 14 -> 7 on MNIST).
# ----------------------------------------------------------------------------------------------------

class Generator(nn.Module):
    """z (B, z_dim) [+ label embedding] -> (B, K, S, S) in [-1, 1]: a linear layer to an S/4 x S/4 map, then two
    stride-2 transposed convs (7 -> 14 -> 28 on MNIST, 8 -> 16 -> 32 on the faces) with BatchNorm and ReLU
    between, tanh at the end (DCGAN)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c, d, m = config.width, config.z_dim, config.image_size // 4
        self.embed = nn.Embedding(config.num_classes, d) if config.num_classes else None
        self.net = nn.Sequential(
            nn.Linear(d, 2 * c * m * m, bias=False), nn.Unflatten(1, (2 * c, m, m)),     # (B, 2C, S/4, S/4)
            nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False),             # (B, C, S/2, S/2)
            nn.BatchNorm2d(c), nn.ReLU(),
            nn.ConvTranspose2d(c, config.channels, 4, stride=2, padding=1), nn.Tanh(),    # (B, K, S, S)
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = z + self.embed(y)          # the label moves the noise: one conditional net, no extra inputs
        return self.net(z)


class Discriminator(nn.Module):
    """(B, K, S, S) [, y] [, t] -> (B,) logits: two stride-2 convs with LeakyReLU(0.2) (DCGAN's judge, no
    BatchNorm, which would let a batch's images see each other and fights the R1 penalty), flattened features
    h (B, F), then a linear read-out plus, when labelled, the projection <embed(y), h> (Miyato & Koyama): the
    label asks "does this look like a real *three*?" rather than being concatenated to the input. A noise level t
    (Diffusion-GAN) is projected the same way. Images of another shape get an error naming the config's."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c, m = config.width, config.image_size // 4
        features = 2 * c * m * m
        self.image_shape = config.image_shape
        self.net = nn.Sequential(
            nn.Conv2d(config.channels, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),     # (B, C, S/2, S/2)
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),               # (B, 2C, S/4, S/4)
            nn.Flatten(),                                                                 # (B, F)
        )
        self.out = nn.Linear(features, 1)
        self.embed = nn.Embedding(config.num_classes, features) if config.num_classes else None
        self.t_embed = nn.Embedding(config.noise_levels, features) if config.noise_levels else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, t: torch.Tensor | None = None):
        h = self.net(check_images(x, "Discriminator", self.image_shape))                 # (B, F)
        logits = self.out(h).squeeze(1)                                                   # (B,)
        if self.embed is not None:
            logits = logits + (self.embed(y) * h).sum(1)                                  # projection on y
        if self.t_embed is not None:
            logits = logits + (self.t_embed(t) * h).sum(1)                                # and on the noise level
        return logits


# ----------------------------------------------------------------------------------------------------
# Diffusion-GAN: show the judge both sides through noise, and raise the noise when it starts to memorise.
# ----------------------------------------------------------------------------------------------------

class AdaptiveNoise(nn.Module):
    """Diffusion-GAN's augmentation (Wang et al. 2022): images x are diffused to x_t = sqrt(abar_t) x +
    sqrt(1 - abar_t) eps on a linear-beta schedule of `levels` steps, t drawn uniformly below a ceiling T. T adapts:
    every `every` judge steps, r = E[sign(D(real))] (how sure the judge is about real images; 1 when it has
    memorised them) is compared with `target` (the paper's 0.6): above it, T rises by `levels * step_size`, below it
    falls. The paper's controller needs ~100k images to sweep T's range; step_size 0.05 sweeps it in 20 moves (80 judge
    steps), fast enough for a run of a few thousand steps. The judge gets t as a label, so it learns one judgement
    per noise level."""

    def __init__(self, levels: int, target: float = 0.6, every: int = 4, step_size: float = 0.05,
                 beta_max: float = 0.02):
        super().__init__()
        self.levels, self.target, self.every, self.step_size = levels, target, every, step_size
        betas = torch.linspace(1e-4, beta_max, levels, dtype=torch.float64)
        self.register_buffer("abar", torch.cumprod(1 - betas, 0).float(), persistent=False)   # (levels,)
        self.register_buffer("ceiling", torch.tensor(0.0))    # T as a float in [0, levels - 1]; saved, resumable
        self.register_buffer("signs", torch.zeros(2))        # running (sum of sign(D(real)), count) since the last move

    def forward(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, ...) at levels t (B,) -> the diffused images (t = 0 is the lightest noise, not none)."""
        a = self.abar[t].reshape(-1, *[1] * (x.dim() - 1))                               # (B, 1, 1, 1)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return a.sqrt() * x + (1 - a).sqrt() * eps

    def draw(self, n: int, device) -> torch.Tensor:
        """n levels uniform in 0..T (the current ceiling)."""
        top = int(self.ceiling.item()) + 1
        return torch.randint(0, top, (n,), device=device)

    @torch.no_grad()
    def observe(self, real_logits: torch.Tensor) -> None:
        """Feed one judge step's logits on real images; every `every` calls, move T toward the target r."""
        self.signs += torch.stack([real_logits.sign().sum(), torch.tensor(float(len(real_logits)))]
                                  ).to(self.signs)
        if self.signs[1] >= self.every * len(real_logits):
            r = self.signs[0] / self.signs[1]
            move = self.levels * self.step_size * (1.0 if r > self.target else -1.0)
            self.ceiling.copy_((self.ceiling + move).clamp(0, self.levels - 1))
            self.signs.zero_()


# ----------------------------------------------------------------------------------------------------
# The game, for minigen.train's several-players step.
# ----------------------------------------------------------------------------------------------------

class GAN(nn.Module):
    """A generator and its judge, trained in turns: one judge step, then one generator step, per batch."""

    def __init__(self, config: GANConfig = GANConfig()):
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.noise = AdaptiveNoise(config.noise_levels) if config.noise_levels else None
        self.register_buffer("judge_steps", torch.tensor(0))   # counts judge steps for lazy R1 (and resumes)
        init_weights(self)

    # -- checks ------------------------------------------------------------------------------------------
    def _labels(self, y, n: int, device, who: str) -> torch.Tensor | None:
        k = self.config.num_classes
        if not k:
            if y is not None:
                raise ValueError(f"{who}: this GAN is unconditional (num_classes=0) but was given labels; "
                                 "use a '-C' preset to condition on the digit")
            return None
        if y is None:
            raise ValueError(f"{who}: this GAN is class-conditional (num_classes={k}); pass labels y of shape ({n},)")
        y = torch.as_tensor(y, device=device)
        if y.shape != (n,) or y.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{who} expects integer labels of shape ({n},), got {tuple(y.shape)} {y.dtype}")
        if check_values(y) and len(y) and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{who}: unknown class id {int(y.max() if y.max() >= k else y.min())}; "
                             f"labels must be in 0..{k - 1}")
        return y.long()

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        check_images(x, "GAN.train_step", self.config.image_shape)
        return x, (self._labels(y, len(x), x.device, "GAN.train_step") if self.config.num_classes else None)

    # -- sampling ----------------------------------------------------------------------------------------
    def noise_like(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None):
        """(n, z_dim) standard normal draws; with `truncation` tau, every |z_i| > tau is redrawn until it is not
        (BigGAN's truncation trick: trades variety for typical-looking samples)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.z_dim, generator=generator, device=device)
        if truncation is not None:
            if truncation <= 0:
                raise ValueError(f"truncation must be > 0, got {truncation}")
            for _ in range(100):                    # P(|z| > tau) per draw; 100 rounds leave none in practice
                bad = z.abs() > truncation
                if not bad.any():
                    break
                z = torch.where(bad, torch.randn(z.shape, generator=generator, device=device), z)
            z = z.clamp(-truncation, truncation)
        return z

    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Noise (B, z_dim) [, labels (B,)] -> images (B, K, S, S), differentiably (for training and inversion)."""
        if not torch.is_tensor(z) or z.ndim != 2 or z.shape[1] != self.config.z_dim:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"GAN.generate expects noise of shape (B, {self.config.z_dim}), got {shape}")
        return self.generator(z, self._labels(y, len(z), z.device, "GAN.generate"))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
               truncation: float | None = None) -> torch.Tensor:
        """n images (n, K, S, S) in [-1, 1], with the generator in eval mode (BatchNorm's running statistics)."""
        was = self.generator.training
        self.generator.eval()
        out = self.generate(self.noise_like(n, generator, truncation), y)
        self.generator.train(was)
        return out

    # -- training ----------------------------------------------------------------------------------------
    def optimizers(self, config) -> dict:
        """One Adam per player, DCGAN's betas (0.5, 0.999): a short momentum memory suits a moving target."""
        betas = (0.5, 0.999) if tuple(config.betas) == (0.9, 0.999) else tuple(config.betas)
        make = lambda m: torch.optim.Adam(m.parameters(), lr=config.lr, betas=betas)  # noqa: E731
        return {"discriminator": make(self.discriminator), "generator": make(self.generator)}

    def judge(self, x: torch.Tensor, y: torch.Tensor | None, t: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator's logits (B,), through Diffusion-GAN's noise first when it is on."""
        if self.noise is not None:
            x = self.noise(x, t)
        return self.discriminator(x, y, t)

    def train_step(self, batch, trainer) -> dict:
        """One judge step on (real, fake), then one generator step on fresh fakes. Returns the logged terms."""
        real, y = self._split(batch)
        c, n = self.config, len(real)
        t = self.noise.draw(n, real.device) if self.noise is not None else None
        fake = self.generator(torch.randn(n, c.z_dim, device=real.device), y)           # (B, K, S, S)

        terms, real_logits = judge_step(c, lambda x: self.judge(x, y, t), trainer, real, fake, int(self.judge_steps))
        self.judge_steps += 1
        if self.noise is not None:
            self.noise.observe(real_logits)
            terms["noise_ceiling"] = self.noise.ceiling.detach().clone()

        g_loss = frozen_judge_loss(self.discriminator, lambda x: self.judge(x, y, t), fake, c.loss)
        trainer.update("generator", {"loss": g_loss})
        terms.update(g_loss=g_loss.detach(), real_score=torch.sigmoid(real_logits).mean().detach())
        terms["loss"] = terms["d_loss"] + terms["g_loss"]        # the bar's number; the two halves are logged
        return terms


# ----------------------------------------------------------------------------------------------------
# The hybrids: a judge added to a likelihood model. The model is passed in (model files import no other model
# file), so any VAE or flow with the course's methods fits. The judge reads config.image_shape, so the config must
# match the wrapped model's images: the default GANConfig for the course's MNIST VAE and flow.
# ----------------------------------------------------------------------------------------------------

class VAEGAN(nn.Module):
    """A VAE whose decoder also plays against a judge (Larsen et al. 2015, arXiv 1512.09300, in its pixel +
    adversarial form): the VAE keeps its ELBO, on binarized digits, and its decodes of prior draws z ~ N(0, I)
    (the mean image 2 sigmoid(logits) - 1) must also look real to a judge that sees grey digits. `adv_weight`
    sets how many nats of ELBO one unit of the generator loss is worth.

    `vae` needs the course VAE's methods: loss(binary images) -> dict, decode(z), config.latent_dim."""

    def __init__(self, vae: nn.Module, config: GANConfig = GANConfig(), adv_weight: float = 20.0):
        super().__init__()
        self.config, self.adv_weight = config, adv_weight
        self.vae, self.discriminator = vae, Discriminator(config)
        self.register_buffer("judge_steps", torch.tensor(0))   # counts judge steps for lazy R1 (and resumes)
        init_weights(self.discriminator)

    def optimizers(self, config) -> dict:
        return _hybrid_optimizers(self, "vae", config)

    def train_step(self, batch, trainer) -> dict:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        check_images(real, "VAEGAN.train_step", self.config.image_shape)
        fake = self.vae.decode(torch.randn(len(real), self.vae.config.latent_dim, device=real.device))
        terms = _hybrid_judge_step(self, trainer, real, fake)
        vae_terms = self.vae.loss(torch.bernoulli((real + 1) / 2))       # fresh binarization, global RNG
        g_loss = frozen_judge_loss(self.discriminator, self.discriminator, fake, self.config.loss)
        trainer.update("vae", {"loss": vae_terms["loss"] + self.adv_weight * g_loss})
        return {**terms, "g_loss": g_loss.detach(), "recon": vae_terms["recon"], "kl": vae_terms["kl"],
                "loss": vae_terms["loss"].detach()}


class FlowGAN(nn.Module):
    """A normalizing flow trained as a generator (Grover et al. 2017, arXiv 1705.08868). `mode`:
    "mle" (bits/dim only: notebook 03's flow), "adversarial" (the generator loss only: the flow is just a
    differentiable sampler, its exact likelihood unused) or "hybrid" (bits/dim + adv_weight x generator loss).
    Samples are the flow's inverse of z ~ N(0, I), y in [0, 1) mapped to [-1, 1] without quantizing, so gradients
    pass. `flow` needs the course Flow's methods: forward, inverse(zs), latent_shapes(), bits_per_dim(images)."""

    MODES = ("mle", "adversarial", "hybrid")

    def __init__(self, flow: nn.Module, config: GANConfig = GANConfig(), mode: str = "hybrid",
                 adv_weight: float = 1.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"FlowGAN mode must be one of {self.MODES}, got {mode!r}")
        self.config, self.mode, self.adv_weight = config, mode, adv_weight
        self.flow, self.discriminator = flow, Discriminator(config)
        self.register_buffer("judge_steps", torch.tensor(0))   # counts judge steps for lazy R1 (and resumes)
        init_weights(self.discriminator)

    def optimizers(self, config) -> dict:
        return _hybrid_optimizers(self, "flow", config)

    def generate(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """(n, K, S, S) samples (the flow's image shape) in [-1, 1], differentiable (no 8-bit quantization)."""
        p = next(self.flow.parameters())
        zs = [temperature * torch.randn(n, *shape, device=p.device) for shape in self.flow.latent_shapes()]
        return (2 * self.flow.inverse(zs) - 1).clamp(-1, 1)

    def train_step(self, batch, trainer) -> dict:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        check_images(real, "FlowGAN.train_step", self.config.image_shape)
        bpd = self.flow.bits_per_dim(real).mean()        # also sets ActNorm from the first batch, in every mode
        fake = self.generate(len(real))
        terms = _hybrid_judge_step(self, trainer, real, fake)
        g_loss = frozen_judge_loss(self.discriminator, self.discriminator, fake, self.config.loss)
        loss = {"mle": bpd, "adversarial": g_loss, "hybrid": bpd + self.adv_weight * g_loss}[self.mode]
        trainer.update("flow", {"loss": loss})
        return {**terms, "g_loss": g_loss.detach(), "bpd": bpd.detach(), "loss": loss.detach()}


def judge_step(config: GANConfig, judge, trainer, real: torch.Tensor, fake: torch.Tensor, step: int):
    """One judge step on (real, fake.detach()), shared by the GAN and the hybrids: the judge's loss, R1 every
    `config.r1_every` steps scaled by it (lazy regularization), and `trainer.update("discriminator", ...)`. `judge`
    maps images to logits. Returns the logged terms and the (detached) logits on the real images."""
    lazy = config.r1_gamma > 0 and step % config.r1_every == 0
    real = real.detach().requires_grad_(lazy)
    real_logits = judge(real)
    loss = discriminator_loss(real_logits, judge(fake.detach()), config.loss)
    terms = {"d_loss": loss.detach()}
    if lazy:
        r1 = r1_penalty(real_logits, real)
        loss = loss + 0.5 * config.r1_gamma * config.r1_every * r1
        terms["r1"] = r1.detach()
    trainer.update("discriminator", {"loss": loss})
    return terms, real_logits.detach()


def frozen_judge_loss(discriminator: nn.Module, judge, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator loss on `judge(fake)`'s logits with the discriminator's weights frozen, so the generator's
    backward leaves them without gradients: the generator's step moves only the generator."""
    discriminator.requires_grad_(False)
    loss = generator_loss(judge(fake), kind)
    discriminator.requires_grad_(True)
    return loss


def _hybrid_judge_step(model: nn.Module, trainer, real: torch.Tensor, fake: torch.Tensor) -> dict:
    terms, _ = judge_step(model.config, model.discriminator, trainer, real, fake, int(model.judge_steps))
    model.judge_steps += 1
    return terms


def _hybrid_optimizers(model: nn.Module, name: str, config) -> dict:
    """A hybrid's two Adams: DCGAN's betas for the judge, the config's for the model it judges (`name`)."""
    return {"discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=config.lr, betas=(0.5, 0.999)),
            name: torch.optim.Adam(getattr(model, name).parameters(), lr=config.lr, betas=tuple(config.betas))}


def init_weights(model: nn.Module) -> None:
    """DCGAN's initialisation: conv and linear weights from N(0, 0.02), zero biases, BatchNorm gains N(1, 0.02).
    Small weights keep both players near-linear at the start, so neither overwhelms the other in the first
    steps; the projection embeddings start at 0 (a conditional judge begins as the unconditional one)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    for m in (getattr(model, "discriminator", None),):
        if m is not None:
            for emb in (m.embed, m.t_embed):
                if emb is not None:
                    nn.init.zeros_(emb.weight)
    gen = getattr(model, "generator", None)
    if gen is not None and gen.embed is not None:
        nn.init.normal_(gen.embed.weight, 0.0, 1.0)    # a label shifts z by about one standard deviation


def count_modes(points: torch.Tensor, centres: torch.Tensor, radius: float, min_share: float = 0.01) -> int:
    """How many of the toy densities' centres (K, 2) hold at least `min_share` of the points (N, 2) within
    `radius`: the 2-D experiments' measure of mode collapse."""
    d = torch.cdist(points.float(), centres.float())                  # (N, K)
    near = (d.min(1).values <= radius)
    hits = torch.bincount(d.argmin(1)[near], minlength=len(centres)).float() / max(len(points), 1)
    return int((hits >= min_share).sum())


__all__ = ["GANConfig", "GAN_PRESETS", "GAN", "Generator", "Discriminator", "AdaptiveNoise", "discriminator_loss",
           "generator_loss", "r1_penalty", "judge_step", "frozen_judge_loss", "init_weights", "count_modes", "LOSSES",
           "VAEGAN", "FlowGAN"]
