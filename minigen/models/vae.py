"""A variational autoencoder: an autoencoder whose codes fill a Gaussian you can sample from.

Kingma & Welling, "Auto-Encoding Variational Bayes" (2013), https://arxiv.org/abs/1312.6114 ;
Rezende, Mohamed & Wierstra, "Stochastic Backpropagation and Approximate Inference in Deep Generative
Models" (2014), https://arxiv.org/abs/1401.4082 ; the importance-weighted bound is from Burda, Grosse &
Salakhutdinov, "Importance Weighted Autoencoders" (2015), https://arxiv.org/abs/1509.00519 ; the beta knob
from Higgins et al., "beta-VAE" (ICLR 2017).

    x (B, 1, 28, 28) in {0, 1} --encoder--> q(z|x) = N(mu, diag(exp(logvar)))  (B, latent_dim) each
    z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)          (reparameterization: gradients reach mu, logvar)
    decoder(z) -> logits (B, 1, 28, 28) of p(x|z) = Bernoulli(sigmoid(logits)) per pixel
    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))  <=  log p(x)            (nats per image)

The likelihood is Bernoulli, so images are binary: each training batch is binarized afresh by sampling
pixel ~ Bernoulli(intensity) (dynamic binarization: the recipe's data, `minigen.recipes.BinarizedBatches`);
evaluation uses one fixed, seeded binarization of the test split (`binarize(images, seed=0)`), so every run
scores the same bits.

    model = VAE(VAE_PRESETS["VAE-B"])          # presets by size; minigen.recipes picks one per profile
    model.loss(binarize(images))               # {"loss": -ELBO, "recon", "kl", "elbo"} for minigen.train
    model.iwae(binarize(test_images), k=500)   # (B,) lower bounds on log p(x), nats
    model.sample(64)                           # (64, 1, 28, 28) images in [-1, 1]

Letters in the shape comments: B batch, C channels (config.width), K importance samples; a latent has
latent_dim numbers.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ConvResBlock, check_images, check_values, conv_decoder, conv_encoder

IMAGE_SHAPE = (1, 28, 28)  # MNIST: one channel, 28 x 28 = 784 binary pixels


@dataclass
class VAEConfig:
    latent_dim: int = 32   # enough room for MNIST's variation; unused dimensions simply collapse to the prior
    width: int = 32        # channels after the first conv (the second has twice as many): fast on a CPU
    hidden: int = 256      # fully connected layer between the 7x7 feature map and the latent, as in notebook 01
    blocks: int = 0        # residual 3x3 conv blocks added at each resolution (14x14, 7x7) of both halves:
                           # more depth for few parameters (the course checkpoint must stay under 4 MB)
    beta: float = 1.0      # weight of the KL term in the loss; 1 is the true ELBO, > 1 trades detail for a
                           # smoother, more prior-like code (beta-VAE). elbo() and iwae() always use beta = 1

    def __post_init__(self):
        for name in ("latent_dim", "width", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.blocks, int) or self.blocks < 0:
            raise ValueError(f"VAEConfig.blocks must be an int >= 0, got {self.blocks!r}")
        if not isinstance(self.beta, (int, float)) or self.beta < 0:
            raise ValueError(f"VAEConfig.beta must be a number >= 0, got {self.beta!r}")


# Presets by size (minigen.recipes picks one per profile; the course checkpoint is recipe("vae", "gpu")'s).
VAE_PRESETS = {
    "VAE-S": VAEConfig(latent_dim=16, width=16, hidden=128),   # smoke test: a few seconds per hundred steps
    "VAE-B": VAEConfig(latent_dim=32, width=32, hidden=256),   # the plain conv VAE: 3.5k steps fit a CPU budget
    "VAE-L": VAEConfig(latent_dim=32, width=32, hidden=256, blocks=2),  # deeper, same width: 3.96 MiB in fp16,
                                                                        # just under the 4 MiB checkpoint limit
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
    (..., 1, 28, 28) -> (...). Written with BCE-with-logits, which stays finite for any logit."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)


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


def check_binary_images(x, who: str) -> torch.Tensor:
    """Raise a clear error unless x is a float batch (B, 1, 28, 28) with values in [0, 1]; return x."""
    if isinstance(x, (tuple, list)):  # (images, labels) batches from a labelled dataset
        x = x[0]
    check_images(x, who, IMAGE_SHAPE)
    if x.numel() and check_values(x) and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{who} expects binarized images with values in {{0, 1}} (the likelihood is Bernoulli), "
                         f"got values in [{x.min().item():.2f}, {x.max().item():.2f}]; convert images in "
                         "[-1, 1] with minigen.models.vae.binarize(images)")
    return x


# ----------------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------------

class VAE(nn.Module):
    """The autoencoder of notebook 01 with two changes: the encoder outputs a mean and a log-variance per
    latent dimension, and the decoder outputs Bernoulli logits; training maximises the ELBO."""

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        c, hidden, d, depth = config.width, config.hidden, config.latent_dim, config.blocks
        # notebook 01's conv stacks (minigen.nn), with `depth` residual blocks at 14x14 and at 7x7
        self.encoder = conv_encoder(2 * d, width=c, hidden=hidden, blocks=depth)   # (B, 2 latent_dim): mean, log-var
        self.decoder = conv_decoder(d, width=c, hidden=hidden, blocks=depth)       # (B, 1, 28, 28) logits
        init_weights(self)

    # -- the two halves ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) binary images -> mean and log-variance of q(z|x), each (B, latent_dim)."""
        x = check_binary_images(x, "VAE.encode")
        mu, logvar = self.encoder(x * 2 - 1).chunk(2, dim=-1)          # centre the bits: {0,1} -> {-1,1}
        return mu, logvar

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(..., latent_dim) latents -> (..., 1, 28, 28) Bernoulli logits of p(x|z)."""
        d = self.config.latent_dim
        if not torch.is_tensor(z) or z.ndim < 2 or z.shape[-1] != d:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"VAE.decode expects latents of shape (B, {d}), got {shape}")
        lead = z.shape[:-1]
        return self.decoder(z.reshape(-1, d)).reshape(*lead, *IMAGE_SHAPE)  # (K*B, latent_dim) -> (K, B, 1, 28, 28)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) latents -> (B, 1, 28, 28) images in [-1, 1]: the mean of p(x|z), 2 * sigmoid(logits) - 1."""
        return 2 * torch.sigmoid(self.logits(z)) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct through the posterior mean: (B, 1, 28, 28) binary -> (B, 1, 28, 28) in [-1, 1]."""
        return self.decode(self.encode(x)[0])

    # -- the objective ----------------------------------------------------------------------------------
    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Per-image ELBO terms with one reparameterized sample: {"recon": E_q log p(x|z) (one-sample
        estimate), "kl": KL(q(z|x) || N(0, I)) (exact)}, each (B,) in nats."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator)                        # (B, latent_dim)
        return {"recon": bernoulli_log_likelihood(self.logits(z), x), "kl": gaussian_kl(mu, logvar)}

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) evidence lower bound on log p(x) in nats (beta = 1, whatever the config says)."""
        t = self.terms(x, generator)
        return t["recon"] - t["kl"]

    def loss(self, batch) -> dict:
        """For minigen.train: loss = -(recon - beta * KL), averaged over the batch. Also logged: "recon",
        the reconstruction NLL -E_q log p(x|z) (the distortion), "kl" (the rate), and "elbo" (beta = 1)."""
        t = self.terms(check_binary_images(batch, "VAE.loss"))
        recon, kl = -t["recon"].mean(), t["kl"].mean()
        return {"loss": recon + self.config.beta * kl, "recon": recon.detach(), "kl": kl.detach(),
                "elbo": -(recon + kl).detach()}

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(K, B) importance log-weights log p(x, z_k) - log q(z_k | x) for K samples z_k ~ q(z|x)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator, n=k)                   # (K, B, latent_dim)
        log_px_z = bernoulli_log_likelihood(self.logits(z), x)           # (K, B)
        return log_px_z + standard_normal_log_prob(z) - gaussian_log_prob(z, mu, logvar)

    @torch.no_grad()
    def iwae(self, x: torch.Tensor, k: int = 100, generator: torch.Generator | None = None,
             chunk: int = 100) -> torch.Tensor:
        """(B,) importance-weighted lower bound on log p(x) with k samples (Burda et al.), in nats; k = 1 is
        a one-sample ELBO and the bound tightens towards log p(x) as k grows. Samples go in chunks of
        `chunk` to bound memory. The bound is log mean_k w_k, the formula of minigen.metrics.iwae_bound."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        x = check_binary_images(x, "VAE.iwae")
        lw = torch.cat([self.log_weights(x, min(chunk, k - i), generator) for i in range(0, k, chunk)])  # (K, B)
        return torch.logsumexp(lw, dim=0) - math.log(k)                 # (B,): log (1/K) sum_k w_k, stably

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n new digits: z ~ N(0, temperature^2 I), decoded to the mean image in [-1, 1]. (n, 1, 28, 28)."""
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z)


def init_weights(model: VAE) -> None:
    """Kaiming-normal weights (fan-in; the ReLU gain suits SiLU) so activations keep their scale, zero biases;
    each residual block's last conv starts at zero, so a block begins as the identity and a deeper preset
    starts out as the shallow network; then two choices that make the first steps sensible: the encoder's
    last layer is scaled down 10x, so the untrained posterior is close to N(0, I) (KL near 0, no huge
    variances), and the decoder's output bias is logit(0.13), MNIST's mean pixel intensity, so the untrained
    decoder draws the average ink level instead of 50 % grey (about 0.39 instead of 0.69 nats per pixel at
    step 0)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    for m in layers:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    for block in (m for m in model.modules() if isinstance(m, ConvResBlock)):
        nn.init.zeros_(block.body[-1].weight)
    with torch.no_grad():
        model.encoder[-1].weight.mul_(0.1)
        model.decoder[-1].weight.mul_(0.1)
        model.decoder[-1].bias.fill_(math.log(0.13 / 0.87))


@torch.no_grad()
def evaluate(model: VAE, images: torch.Tensor, k: int = 500, seed: int = 0, batch_size: int = 100) -> dict:
    """Held-out bounds on binary images (N, 1, 28, 28): mean ELBO and mean IWAE bound (k samples) in nats,
    and their negatives, the NLL bounds that papers report. Seeded, so the same model scores the same."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    elbo, iw = [], []
    for b in images.split(batch_size):
        b = b.to(device)
        elbo.append(model.elbo(b, generator).cpu())
        iw.append(model.iwae(b, k, generator).cpu())
    elbo, iw = torch.cat(elbo).mean().item(), torch.cat(iw).mean().item()
    return {"elbo": elbo, "iwae": iw, "nll_elbo": -elbo, "nll_iwae": -iw, "k": k, "n": len(images)}

