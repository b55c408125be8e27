"""A variational autoencoder: an autoencoder whose codes fill a Gaussian you can sample from.

Kingma & Welling, "Auto-Encoding Variational Bayes" (2013), https://arxiv.org/abs/1312.6114 ;
Rezende, Mohamed & Wierstra, "Stochastic Backpropagation and Approximate Inference in Deep Generative
Models" (2014), https://arxiv.org/abs/1401.4082 ; the importance-weighted bound is from Burda, Grosse &
Salakhutdinov, "Importance Weighted Autoencoders" (2015), https://arxiv.org/abs/1509.00519 ; the beta knob
from Higgins et al., "beta-VAE" (ICLR 2017).

    x (B, C, s, s) --encoder--> q(z|x) = N(mu, diag(exp(logvar)))             (B, latent_dim) each
    z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)          (reparameterization: gradients reach mu, logvar)
    decoder(z) -> (B, C, s, s): the parameters of p(x|z), one per pixel
    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))  <=  log p(x)            (nats per image)

Two likelihoods (`VAEConfig.likelihood`):
- "bernoulli" (MNIST, 1 x 28 x 28, the default): the decoder outputs logits, p(x|z) = Bernoulli(sigmoid(logits))
  per pixel, so images are binary: each training batch is binarized afresh by sampling pixel ~ Bernoulli(intensity)
  (dynamic binarization: the recipe's data, `minigen.recipes.BinarizedBatches`); evaluation uses one fixed, seeded
  binarization of the test split (`binarize(images, seed=0)`), so every run scores the same bits.
- "gaussian" (RGB faces, 3 x 32 x 32, `minigen.data.make_faces`): images stay continuous in [-1, 1]; the decoder
  outputs the mean and one learned scalar sigma serves every pixel, p(x|z) = N(mean, sigma^2 I) (Rybkin, Daniilidis
  & Levine, "Simple and Effective VAE Training with Calibrated Decoders" (2021), https://arxiv.org/abs/2006.13202).
  Its bounds are log densities, not probabilities: they are not comparable with the binary MNIST numbers.

    model = VAE(VAE_PRESETS["VAE-B"])          # presets by size; minigen.recipes picks one per profile
    model.loss(binarize(images))               # {"loss": -ELBO, "recon", "kl", "elbo"} for minigen.train
    model.iwae(binarize(test_images), k=500)   # (B,) lower bounds on log p(x), nats
    model.sample(64)                           # (64, 1, 28, 28) images in [-1, 1]
    faces = VAE(VAE_PRESETS["VAE-F"])          # gaussian, (B, 3, 32, 32): faces.loss(make_faces(256).images)

Letters in the shape comments: B batch, C image channels (config.channels), s the image side (config.image_size),
K importance samples; a latent has latent_dim numbers.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import threads
from ..nn import ConvResBlock, check_images, check_values, conv_decoder, conv_encoder

LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass
class VAEConfig:
    latent_dim: int = 32   # enough room for MNIST's variation; unused dimensions simply collapse to the prior
    width: int = 32        # channels after the first conv (the second has twice as many): fast on a CPU
    hidden: int = 256      # fully connected layer between the s/4 x s/4 feature map (MNIST: 7x7) and the latent,
                           # as in notebook 01
    blocks: int = 0        # residual 3x3 conv blocks added at each resolution (s/2, s/4: 14x14, 7x7) of both halves:
                           # more depth for few parameters (the course checkpoint must stay under 4 MB)
    beta: float = 1.0      # weight of the KL term in the loss; 1 is the true ELBO, > 1 trades detail for a
                           # smoother, more prior-like code (beta-VAE). elbo() and iwae() always use beta = 1
    channels: int = 1      # image channels: MNIST's digits are grey (1); RGB images such as the faces have 3
    image_size: int = 28   # side s of the square images, MNIST's 28; divisible by 4 (the conv stacks halve it twice)
    likelihood: str = "bernoulli"  # p(x|z) per pixel: "bernoulli" on binarized digits, so the course's test NLL in
                                   # nats compares with the papers'; "gaussian" for continuous images in [-1, 1]

    def __post_init__(self):
        for name in ("latent_dim", "width", "hidden", "channels", "image_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % 4:
            raise ValueError(f"VAEConfig.image_size must be divisible by 4 (the conv stacks halve the image twice), "
                             f"got {self.image_size}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"VAEConfig.likelihood must be one of {', '.join(map(repr, LIKELIHOODS))}, "
                             f"got {self.likelihood!r}")
        if not isinstance(self.blocks, int) or self.blocks < 0:
            raise ValueError(f"VAEConfig.blocks must be an int >= 0, got {self.blocks!r}")
        if not isinstance(self.beta, (int, float)) or self.beta < 0:
            raise ValueError(f"VAEConfig.beta must be a number >= 0, got {self.beta!r}")


# Presets by size (minigen.recipes picks one per profile and one for the course checkpoint).
VAE_PRESETS = {
    "VAE-S": VAEConfig(latent_dim=16, width=16, hidden=128),   # smoke test: a few seconds per hundred steps
    "VAE-B": VAEConfig(latent_dim=32, width=32, hidden=256),   # the plain conv VAE: 3.5k steps fit a CPU budget
    "VAE-L": VAEConfig(latent_dim=32, width=32, hidden=256, blocks=2),  # deeper, same width: 3.96 MiB in fp16,
                                                                        # just under the 4 MiB checkpoint limit
    # RGB faces (notebook 08, minigen.data.make_faces): continuous pixels in [-1, 1], a gaussian likelihood
    "VAE-F": VAEConfig(latent_dim=32, width=32, hidden=256, channels=3, image_size=32,
                       likelihood="gaussian"),            # VAE-B's network on 3 x 32 x 32: a CPU budget
    "VAE-F-L": VAEConfig(latent_dim=64, width=64, hidden=512, blocks=2, channels=3, image_size=32,
                         likelihood="gaussian"),          # twice as wide, deeper, a roomier code: for a GPU
}


# ----------------------------------------------------------------------------------------------------
# The two formulas of the lecture, written once (the notebook's exercises re-derive them).
# ----------------------------------------------------------------------------------------------------

def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                   n: int | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of N(mu, diag(exp(logvar))) that is a
    differentiable function of mu and logvar. (B, latent_dim) -> (B, latent_dim), or (n, B, latent_dim) with n."""
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor | float = 0.0,
                logvar_p: torch.Tensor | float = 0.0) -> torch.Tensor:
    """KL(N(mu_q, diag e^logvar_q) || N(mu_p, diag e^logvar_p)), summed over the last dim, in nats:

        0.5 * sum( logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1 )

    The defaults (0, 0) give the VAE's KL to the standard normal prior. (..., latent_dim) -> (...)."""
    mu_p, logvar_p = torch.as_tensor(mu_p, dtype=mu_q.dtype), torch.as_tensor(logvar_p, dtype=mu_q.dtype)
    ratio = (logvar_q.exp() + (mu_q - mu_p).square()) / logvar_p.exp()
    return 0.5 * (logvar_p - logvar_q + ratio - 1.0).sum(dim=-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | logits) = sum_pixels x log sigmoid(l) + (1 - x) log sigmoid(-l), per image, in nats.
    (..., C, s, s) -> (...). Written with BCE-with-logits, which stays finite for any logit."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)


def gaussian_log_likelihood(mean: torch.Tensor, log_sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, sigma^2 I) with one sigma = exp(log_sigma) for every pixel, per image, in nats:

        - sum_pixels [ (x - mean)^2 / (2 sigma^2) + log sigma + log(2 pi) / 2 ]

    (..., C, s, s) means and images (broadcast) -> (...)."""
    z = (x - mean) / log_sigma.exp()
    return -(0.5 * z.square() + log_sigma + 0.5 * math.log(2 * math.pi)).flatten(-3).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim. (..., latent_dim) -> (...)."""
    return -0.5 * (z.square() + math.log(2 * math.pi)).sum(dim=-1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag e^logvar) summed over the last dim. (..., latent_dim) -> (...)."""
    return -0.5 * ((z - mu).square() / logvar.exp() + logvar + math.log(2 * math.pi)).sum(dim=-1)


# ----------------------------------------------------------------------------------------------------
# Binary digits: fresh coin flips for every training batch (minigen.recipes.BinarizedBatches), one fixed
# set of flips for evaluation.
# ----------------------------------------------------------------------------------------------------

def binarize(images: torch.Tensor, seed: int | None = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary images {0., 1.}: pixel ~ Bernoulli(intensity), intensity = (x + 1) / 2 for x in [-1, 1].

    With the default seed=0 the flips are the same on every run (the course's fixed test binarization);
    pass a generator (or seed=None for the global RNG) for fresh ones."""
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise TypeError("binarize expects a float tensor of images in [-1, 1]")
    if generator is None and seed is not None:
        generator = torch.Generator(device=images.device).manual_seed(seed)
    return torch.bernoulli(((images + 1) / 2).clamp(0, 1), generator=generator)


def check_binary_images(x, who: str, shape: tuple = (1, 28, 28)) -> torch.Tensor:
    """Raise a clear error unless x is a float batch (B, *shape) with values in [0, 1]; return x."""
    if isinstance(x, (tuple, list)):  # (images, labels) batches from a labelled dataset
        x = x[0]
    check_images(x, who, shape)
    if x.numel() and check_values(x) and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{who} expects binarized images with values in {{0, 1}} (the likelihood is Bernoulli), "
                         f"got values in [{x.min().item():.2f}, {x.max().item():.2f}]; convert images in "
                         "[-1, 1] with minigen.models.vae.binarize(images)")
    return x


def check_continuous_images(x, who: str, shape: tuple) -> torch.Tensor:
    """Raise a clear error unless x is a float batch (B, *shape) with values in [-1, 1]; return x."""
    if isinstance(x, (tuple, list)):  # (images, attributes) batches
        x = x[0]
    check_images(x, who, shape)
    if x.numel() and check_values(x) and (x.min() < -1 or x.max() > 1):
        raise ValueError(f"{who} expects images with values in [-1, 1] (the likelihood is gaussian), got values in "
                         f"[{x.min().item():.2f}, {x.max().item():.2f}]; map images in [0, 1] with 2 * x - 1")
    return x


# ----------------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------------

class VAE(nn.Module):
    """The autoencoder of notebook 01 with two changes: the encoder outputs a mean and a log-variance per
    latent dimension, and the decoder outputs the parameters of p(x|z) (Bernoulli logits, or a gaussian's mean
    with one learned sigma); training maximises the ELBO."""

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        c, hidden, d, depth, s = config.width, config.hidden, config.latent_dim, config.blocks, config.image_size
        self.image_shape = (config.channels, s, s)                  # (C, s, s): MNIST's (1, 28, 28)
        # notebook 01's conv stacks (minigen.nn), with `depth` residual blocks at s/2 and at s/4
        self.encoder = conv_encoder(2 * d, in_channels=config.channels, width=c, hidden=hidden, blocks=depth,
                                    image_size=s)                   # (B, 2 latent_dim): mean, log-var
        # (B, C, s, s) raw outputs: Bernoulli logits, or the gaussian's mean. No tanh on the mean: the gaussian puts
        # mass outside [-1, 1] anyway, a pixel at exactly +-1 would need an infinite pre-activation, and a
        # saturated tanh passes no gradient; decode() clamps the mean to [-1, 1] for display instead
        self.decoder = conv_decoder(d, out_channels=config.channels, width=c, hidden=hidden, blocks=depth,
                                    image_size=s)
        if config.likelihood == "gaussian":
            # log sigma of p(x|z), shared by every pixel and learned (sigma-VAE): it settles near the decoder's
            # RMS error, which weighs reconstruction against the KL without a hand-tuned beta. It starts at
            # sigma = 0.1, a twentieth of the [-1, 1] range: a small sigma makes the first steps reconstruct
            # (a large one lets the KL win early and the code collapse to the prior) and it grows as needed
            self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))
        init_weights(self)

    def check_images(self, x, who: str) -> torch.Tensor:
        """Raise a clear error unless x is a batch this model's likelihood scores: binary images (B, C, s, s) in
        {0, 1} for bernoulli, continuous ones in [-1, 1] for gaussian. Returns x (the images of a tuple batch)."""
        if self.config.likelihood == "bernoulli":
            return check_binary_images(x, who, self.image_shape)
        return check_continuous_images(x, who, self.image_shape)

    # -- the two halves ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, s, s) images (binary for bernoulli, in [-1, 1] for gaussian) -> mean and log-variance of
        q(z|x), each (B, latent_dim)."""
        x = self.check_images(x, "VAE.encode")
        if self.config.likelihood == "bernoulli":
            x = x * 2 - 1                                               # centre the bits: {0,1} -> {-1,1}
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """(..., latent_dim) latents -> (..., C, s, s) raw decoder outputs: the Bernoulli logits of p(x|z), or
        the gaussian's mean (unclamped)."""
        d = self.config.latent_dim
        if not torch.is_tensor(z) or z.ndim < 2 or z.shape[-1] != d:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"VAE.decode expects latents of shape (B, {d}), got {shape}")
        lead = z.shape[:-1]
        return self.decoder(z.reshape(-1, d)).reshape(*lead, *self.image_shape)  # (K*B, latent_dim) -> (K, B, C, s, s)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(..., latent_dim) latents -> (..., C, s, s) Bernoulli logits of p(x|z) (a bernoulli model only)."""
        if self.config.likelihood != "bernoulli":
            raise ValueError("VAE.logits: this VAE's likelihood is gaussian, its decoder outputs a mean, not logits; "
                             "use decode(z) (the mean in [-1, 1]) or decoder_output(z)")
        return self.decoder_output(z)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image in nats: images (B, C, s, s) and latents (..., B, latent_dim) -> (..., B)."""
        out = self.decoder_output(z)                                    # (..., B, C, s, s)
        if self.config.likelihood == "bernoulli":
            return bernoulli_log_likelihood(out, x)
        return gaussian_log_likelihood(out, self.log_sigma, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) latents -> (B, C, s, s) images in [-1, 1], the mean of p(x|z): 2 * sigmoid(logits) - 1
        for bernoulli, the gaussian's mean clamped to [-1, 1]."""
        out = self.decoder_output(z)
        if self.config.likelihood == "bernoulli":
            return 2 * torch.sigmoid(out) - 1
        return out.clamp(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct through the posterior mean: (B, C, s, s) images -> (B, C, s, s) in [-1, 1]."""
        return self.decode(self.encode(x)[0])

    # -- the objective ----------------------------------------------------------------------------------
    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Per-image ELBO terms with one reparameterized sample: {"recon": E_q log p(x|z) (one-sample
        estimate), "kl": KL(q(z|x) || N(0, I)) (exact)}, each (B,) in nats."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator)                        # (B, latent_dim)
        return {"recon": self.log_likelihood(x, z), "kl": gaussian_kl(mu, logvar)}

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) evidence lower bound on log p(x) in nats (beta = 1, whatever the config says)."""
        t = self.terms(x, generator)
        return t["recon"] - t["kl"]

    def loss(self, batch) -> dict:
        """For minigen.train: loss = -(recon - beta * KL), averaged over the batch. Also logged: "recon",
        the reconstruction NLL -E_q log p(x|z) (the distortion), "kl" (the rate), and "elbo" (beta = 1)."""
        t = self.terms(self.check_images(batch, "VAE.loss"))
        recon, kl = -t["recon"].mean(), t["kl"].mean()
        return {"loss": recon + self.config.beta * kl, "recon": recon.detach(), "kl": kl.detach(),
                "elbo": -(recon + kl).detach()}

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(K, B) importance log-weights log p(x, z_k) - log q(z_k | x) for K samples z_k ~ q(z|x)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator, n=k)                   # (K, B, latent_dim)
        log_px_z = self.log_likelihood(x, z)                             # (K, B)
        return log_px_z + standard_normal_log_prob(z) - gaussian_log_prob(z, mu, logvar)

    @torch.no_grad()
    def iwae(self, x: torch.Tensor, k: int = 100, generator: torch.Generator | None = None,
             chunk: int = 100) -> torch.Tensor:
        """(B,) importance-weighted lower bound on log p(x) with k samples (Burda et al.), in nats; k = 1 is
        a one-sample ELBO and the bound tightens towards log p(x) as k grows. Samples go in chunks of
        `chunk` to bound memory. The bound is log mean_k w_k, the formula of minigen.metrics.iwae_bound."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        x = self.check_images(x, "VAE.iwae")
        lw = torch.cat([self.log_weights(x, min(chunk, k - i), generator) for i in range(0, k, chunk)])  # (K, B)
        return torch.logsumexp(lw, dim=0) - math.log(k)                 # (B,): log (1/K) sum_k w_k, stably

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n new images: z ~ N(0, temperature^2 I), decoded to the mean image in [-1, 1]. (n, C, s, s)."""
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z)


def init_weights(model: VAE) -> None:
    """Kaiming-normal weights (fan-in; the ReLU gain suits SiLU) so activations keep their scale, zero biases;
    each residual block's last conv starts at zero, so a block begins as the identity and a deeper preset
    starts out as the shallow network; then two choices that make the first steps sensible: the encoder's
    last layer is scaled down 10x, so the untrained posterior is close to N(0, I) (KL near 0, no huge
    variances), and the decoder's output starts at the data's average: for bernoulli its bias is logit(0.13),
    MNIST's mean pixel intensity, so the untrained decoder draws the average ink level instead of 50 % grey
    (about 0.39 instead of 0.69 nats per pixel at step 0); for gaussian it stays 0, the middle of [-1, 1] and
    close to the faces' mean colour (about -0.14)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    for m in layers:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    for block in (m for m in model.modules() if isinstance(m, ConvResBlock)):
        nn.init.zeros_(block.body[-1].weight)
    with torch.no_grad():
        model.encoder[-1].weight.mul_(0.1)
        model.decoder[-1].weight.mul_(0.1)
        if model.config.likelihood == "bernoulli":
            model.decoder[-1].bias.fill_(math.log(0.13 / 0.87))


@torch.no_grad()
def evaluate(model: VAE, images: torch.Tensor, k: int = 500, seed: int = 0, batch_size: int = 100) -> dict:
    """Held-out bounds on images the model's likelihood scores (binary (N, 1, 28, 28) for the MNIST presets, in
    [-1, 1] for gaussian ones): mean ELBO and mean IWAE bound (k samples) in nats, and their negatives, the NLL
    bounds that papers report (for gaussian models, bounds on a log density: not comparable with binary NLLs).
    Seeded, so the same model scores the same."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    elbo, iw = [], []
    for b in images.split(batch_size):
        threads.adapt()  # a clock read; every few seconds a look at the machine (minigen/threads.py)
        b = b.to(device)
        elbo.append(model.elbo(b, generator).cpu())
        iw.append(model.iwae(b, k, generator).cpu())
    elbo, iw = torch.cat(elbo).mean().item(), torch.cat(iw).mean().item()
    return {"elbo": elbo, "iwae": iw, "nll_elbo": -elbo, "nll_iwae": -iw, "k": k, "n": len(images)}
