"""Denoising diffusion and flow matching, model-agnostic: schedules, the forward process, the losses, the samplers.

Papers:
- Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM), arXiv 2006.11239: the linear
  schedule, q(x_t | x_0) in closed form, the posterior q(x_{t-1} | x_t, x_0), epsilon-prediction, the
  ancestral sampler.
- Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", arXiv 2102.09672: the cosine
  schedule.
- Song, Meng & Ermon 2020, "Denoising Diffusion Implicit Models" (DDIM), arXiv 2010.02502: few-step
  sampling on a sub-sequence of timesteps, eta in [0, 1], deterministic inversion at eta = 0.
- Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", arXiv 2207.12598: label dropout, guided eps.
- Lugmayr et al. 2022, "RePaint", arXiv 2201.09865: inpainting with resampling.
- Meng et al. 2021, "SDEdit", arXiv 2108.01073: edit by noising an input part-way and denoising it.
- Lipman et al. 2022, "Flow Matching for Generative Modeling", arXiv 2210.02747, and Liu et al. 2022, "Flow
  Straight and Fast" (rectified flow), arXiv 2209.03003: straight paths, the velocity target, ODE sampling;
  Esser et al. 2024 (Stable Diffusion 3), arXiv 2403.03206: logit-normal training times (the last section).

Nothing here knows what the data is: x is any tensor (B, ...) -- images (B, C, H, W), latents, videos
(B, T, C, H, W), 2-D points (B, 2). The denoiser is any callable `model(x_t, t, y=None) -> eps` with eps
shaped like x_t and t a (B,) long tensor of timesteps in [0, num_steps) (the papers' T is `num_steps` here: T
is the letter for video frames). Schedules are float64 on the CPU; each coefficient is gathered at t and cast to
x's dtype and device when used. A `Diffusion` wrapper holds its schedule's name and length in its `config`
(a `DiffusionConfig`), so a checkpoint records the schedule and the samplers refuse a mismatched one.
"""
import math
from dataclasses import dataclass, field, is_dataclass, replace

import torch
from torch import nn

from . import threads
from .nn import check_values

SCHEDULES = ("linear", "cosine")


# ----------------------------------------------------------------------------------------------------
# Schedules and the forward process
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """Every per-timestep constant of a `num_steps`-step diffusion, float64, index t = 0 .. num_steps - 1 (the
    papers' 1 .. T)."""
    name: str
    betas: torch.Tensor                # beta_t: the variance added at step t
    alphas_cumprod: torch.Tensor       # alpha-bar_t = prod_{s<=t} (1 - beta_s): signal kept after t steps
    _copies: dict = field(default_factory=dict, compare=False, repr=False)  # device -> this schedule there

    def on(self, device) -> "Schedule":
        """This schedule with its tables on `device`, made once per device: a training step then gathers its
        coefficients where x lives, with no host-to-GPU copy (and no wait for the GPU) per step."""
        device = torch.device(device)
        if self.betas.device == device:
            return self
        if device not in self._copies:
            self._copies[device] = replace(self, betas=self.betas.to(device),
                                           alphas_cumprod=self.alphas_cumprod.to(device), _copies={})
        return self._copies[device]

    @property
    def num_steps(self) -> int:
        """The number of timesteps (the papers' T)."""
        return len(self.betas)

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """alpha-bar_{t-1}, with alpha-bar_{-1} = 1 (no noise before the first step)."""
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha-bar / (1 - alpha-bar) of x_t (Kingma et al. 2021)."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    @property
    def posterior_variance(self) -> torch.Tensor:
        """beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) * beta_t  (DDPM eq. 7)."""
        return (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod) * self.betas

    @property
    def posterior_mean_coef1(self) -> torch.Tensor:
        """The weight of x_0 in mu-tilde: sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t)  (DDPM eq. 7)."""
        return self.alphas_cumprod_prev.sqrt() * self.betas / (1.0 - self.alphas_cumprod)

    @property
    def posterior_mean_coef2(self) -> torch.Tensor:
        """The weight of x_t in mu-tilde: sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t)."""
        return self.alphas.sqrt() * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)


def make_schedule(name: str = "cosine", num_steps: int = 1000) -> Schedule:
    """A `num_steps`-step schedule: "linear" (DDPM: beta from 1e-4 to 0.02 at 1000 steps, rescaled by
    1000 / num_steps as in Improved DDPM so other lengths keep the same end points) or "cosine" (Improved DDPM,
    offset s = 0.008)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    if name == "linear":
        scale = 1000.0 / num_steps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)
    elif name == "cosine":
        s = 0.008
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2         # (num_steps + 1,) alpha-bar at 0 .. num_steps
        betas = (1.0 - f[1:] / f[:-1]).clamp(max=0.999)                   # clipped: no singularity at the last step
    else:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    return Schedule(name, betas, torch.cumprod(1.0 - betas, dim=0))


def _gather(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values[t] as a (B, 1, ..., 1) tensor of x's dtype and device, ready to broadcast over x (B, ...).

    `values` is a table of `schedule.on(x.device)`, so the gather runs where x lives."""
    values = values[t.to(values.device)]                                   # (B,) float64
    return values.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def _check_t(schedule: Schedule, x: torch.Tensor, t) -> torch.Tensor:
    """t as a (B,) long tensor; an int is broadcast. Clear errors for a wrong length or range."""
    if not torch.is_tensor(x) or x.dim() < 1:
        raise ValueError(f"x must be a tensor (B, ...), got {type(x).__name__} {getattr(x, 'shape', '')}")
    t = torch.full((x.shape[0],), t, dtype=torch.long) if isinstance(t, int) else torch.as_tensor(t)
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be (B,) = ({x.shape[0]},) timesteps, one per sample, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or (t.numel() and check_values(t) and (t.min() < 0 or t.max() >= schedule.num_steps)):
        raise ValueError(f"t must hold integer timesteps in [0, {schedule.num_steps}), got {t.tolist()[:8]}")
    return t.long()


def _check_like(name: str, a: torch.Tensor, x: torch.Tensor) -> None:
    if a.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(a.shape)}")


def q_sample(schedule: Schedule, x0: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I), in one step (DDPM eq. 4)."""
    t = _check_t(schedule, x0, t)
    noise = torch.randn_like(x0) if noise is None else noise
    _check_like("noise", noise, x0)
    ab = _gather(schedule.on(x0.device).alphas_cumprod, t, x0)          # (B, 1, ..., 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def posterior_mean_variance(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7); variance is (B, 1, ..., 1)."""
    t = _check_t(schedule, x_t, t)
    _check_like("x0", x0, x_t)
    s = schedule.on(x_t.device)
    mean = _gather(s.posterior_mean_coef1, t, x_t) * x0 + _gather(s.posterior_mean_coef2, t, x_t) * x_t
    return mean, _gather(s.posterior_variance, t, x_t)


def predict_x0_from_eps(schedule: Schedule, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """Invert q_sample: x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t)."""
    t = _check_t(schedule, x_t, t)
    _check_like("eps", eps, x_t)
    ab = _gather(schedule.on(x_t.device).alphas_cumprod, t, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def predict_eps_from_x0(schedule: Schedule, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
    t = _check_t(schedule, x_t, t)
    ab = _gather(schedule.on(x_t.device).alphas_cumprod, t, x_t)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


# ----------------------------------------------------------------------------------------------------
# Training: epsilon-prediction with optional class labels and label dropout
# ----------------------------------------------------------------------------------------------------

@dataclass
class DiffusionConfig:
    """What a `Diffusion` wrapper is, beyond its denoiser's weights: a checkpoint stores this (asdict), so loading
    one made with another schedule is an error that names the differing fields."""
    schedule: str = "cosine"        # Improved DDPM's cosine: destroys information evenly over the chain
    num_steps: int = 1000           # timesteps of the chain (the papers' T): small steps keep each reverse Gaussian
    parameterization: str = "eps"   # what the denoiser predicts: the added noise (DDPM); the only one implemented
    num_classes: int | None = None  # class labels 0 .. num_classes - 1; label num_classes is the null label
    p_uncond: float = 0.1           # label dropout for classifier-free guidance (Ho & Salimans use 0.1 to 0.2)
    denoiser: object = None         # the denoiser's own config dataclass (e.g. a UNetConfig), nested

    def __post_init__(self):
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 2:
            raise ValueError(f"DiffusionConfig.num_steps must be an integer >= 2, got {self.num_steps!r}")
        if self.parameterization != "eps":
            raise ValueError(f"DiffusionConfig.parameterization {self.parameterization!r} is not implemented; "
                             "minigen.diffusion trains and samples epsilon-prediction ('eps') only")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise ValueError(f"DiffusionConfig.num_classes must be None or a positive int, got {self.num_classes!r}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be a probability in [0, 1], got {self.p_uncond}")


def drop_labels(y: torch.Tensor | None, num_classes: int | None, p_uncond: float) -> torch.Tensor | None:
    """Labels for a training step with classifier-free guidance: each replaced by the null label `num_classes` with
    probability p_uncond; None for an unconditional model (num_classes None), whatever the batch carries."""
    if num_classes is None:
        return None
    if y is not None and p_uncond > 0:
        drop = torch.rand(y.shape, device=y.device) < p_uncond
        y = torch.where(drop, torch.full_like(y, num_classes), y)
    return y


def drop_captions(tokens: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Caption dropout for classifier-free guidance with text: each row of token ids (B, L) replaced by the null
    caption, all padding (id 0), with probability p; the same tensor when p is 0."""
    if not torch.is_tensor(tokens) or tokens.ndim != 2:
        shape = tuple(tokens.shape) if torch.is_tensor(tokens) else type(tokens).__name__
        raise ValueError(f"drop_captions expects (B, L) token ids, got {shape}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"caption dropout must be a probability in [0, 1], got {p}")
    if p == 0:
        return tokens
    drop = torch.rand(tokens.shape[0], generator=generator).to(tokens.device) < p               # (B,)
    return tokens.masked_fill(drop[:, None], 0)


class Diffusion(nn.Module):
    """Wrap a denoiser `model(x_t, t, y=None) -> eps` with a schedule so `minigen.train` can fit it.

    `loss(batch)` takes x0 (B, ...) or (x0, y): it draws t ~ U{0 .. num_steps - 1} and eps ~ N(0, I) and returns
    {"loss": mean ||eps - model(x_t, t, y)||^2} (DDPM's L_simple). With `num_classes`, each label is replaced
    by the null label `num_classes` with probability `p_uncond`, so one network learns both p(x | y) and
    p(x) -- what classifier-free guidance needs. `config` is a DiffusionConfig: the schedule's name and length,
    the labels, and the denoiser's own config nested (what checkpoints store).
    """

    def __init__(self, model: nn.Module, schedule: Schedule, *, num_classes: int | None = None,
                 p_uncond: float = 0.1):
        super().__init__()
        denoiser = getattr(model, "config", None)
        self.config = DiffusionConfig(schedule.name, schedule.num_steps, "eps", num_classes, p_uncond,
                                      denoiser if is_dataclass(denoiser) else None)
        self.model, self.schedule = model, schedule

    @classmethod
    def from_config(cls, model: nn.Module, config: DiffusionConfig) -> "Diffusion":
        """The wrapper `config` describes, around the denoiser `model` (built from `config.denoiser`)."""
        if config.denoiser is not None and getattr(model, "config", None) != config.denoiser:
            raise ValueError(f"the denoiser's config {getattr(model, 'config', None)} is not the one the "
                             f"DiffusionConfig names, {config.denoiser}")
        return cls(model, make_schedule(config.schedule, config.num_steps), num_classes=config.num_classes,
                   p_uncond=config.p_uncond)

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes

    @property
    def p_uncond(self) -> float:
        return self.config.p_uncond

    @property
    def null_label(self) -> int | None:
        return self.num_classes

    def loss(self, batch) -> dict:
        x0, y = (batch if isinstance(batch, (tuple, list)) else (batch, None))[:2]
        y = drop_labels(y, self.num_classes, self.p_uncond)
        t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        eps = self.model(q_sample(self.schedule, x0, t, noise), t, y=y)
        return {"loss": (eps - noise).square().mean()}

    def forward(self, x_t, t, y=None):
        return self.model(x_t, t, y=y)


def check_schedule(model, schedule: Schedule, who: str) -> None:
    """Raise a ValueError naming both when `model` is a Diffusion wrapper trained on another schedule than the
    one a sampler was given (a 100-step schedule driving a 1000-step model samples garbage, silently)."""
    own = model.schedule if isinstance(model, Diffusion) else None
    if own is not None and (own.name, own.num_steps) != (schedule.name, schedule.num_steps):
        raise ValueError(f"{who}: the model was trained on the {own.name!r} schedule with num_steps="
                         f"{own.num_steps}, but the schedule given is {schedule.name!r} with num_steps="
                         f"{schedule.num_steps}; pass the model's own (model.schedule)")


def guided_eps(model, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
               scale: float = 1.0, null_label: int | None = None) -> torch.Tensor:
    """Classifier-free guidance: eps_uncond + scale * (eps_cond - eps_uncond) (Ho & Salimans 2022).

    scale = 1 is the conditional model, 0 the unconditional one, > 1 trades diversity for fidelity.
    Both passes run as one batch (2B). Without labels (y None) the model is simply called unconditionally.
    y is (B,) labels, or (B, L) caption token ids for a caption model, whose null_label is 0: the all-padding
    caption.
    """
    if y is None:
        return model(x_t, t, y=None)
    if y.ndim not in (1, 2) or y.shape[0] != x_t.shape[0]:
        raise ValueError(f"y must be (B,) labels or (B, L) caption token ids for B = {x_t.shape[0]}, got shape "
                         f"{tuple(y.shape)}")
    if scale == 1.0:
        return model(x_t, t, y=y)
    if null_label is None:
        raise ValueError("guidance scale != 1 needs null_label (the label the model was trained with for 'no class')")
    both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), y=torch.cat([y, torch.full_like(y, null_label)]))
    eps_cond, eps_uncond = both.chunk(2)                                  # (2B, ...) -> 2 x (B, ...)
    return eps_uncond + scale * (eps_cond - eps_uncond)


# ----------------------------------------------------------------------------------------------------
# Samplers. Each takes the denoiser and optional labels/guidance; `record` (a list) collects
# (t, x_t, predicted x_0) at every step for animations and scrubbers.
# ----------------------------------------------------------------------------------------------------

def _eps_fn(model, y, guidance, null_label):
    def eps(x, t):
        if x.device.type == "cpu":
            threads.adapt()  # a clock read; every few seconds a look at the machine (minigen/threads.py)
        return guided_eps(model, x, t, y, guidance, null_label)
    return eps


def _start(shape, x_T, generator, device) -> torch.Tensor:
    if x_T is not None:
        return x_T
    if shape is None:
        raise ValueError("give the sample shape (B, ...) or a starting noise x_T")
    return torch.randn(tuple(shape), generator=generator, device=device or "cpu")


def _noise_like(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _x0(schedule, x, t, eps, clip_x0):
    x0 = predict_x0_from_eps(schedule, x, t, eps)
    return x0 if clip_x0 is None else x0.clamp(-clip_x0, clip_x0)


@torch.no_grad()
def ddpm_sample(model, schedule: Schedule, shape=None, *, x_T=None, y=None, guidance: float = 1.0,
                null_label=None, clip_x0: float | None = None, generator=None, device=None, record=None):
    """Ancestral sampling through all num_steps steps: x_{t-1} ~ N(mu-tilde(x_t, x0_hat), beta-tilde_t) (DDPM
    alg. 2). `x_T` is the starting noise (x at the last step, the papers' x_T)."""
    check_schedule(model, schedule, "ddpm_sample")
    x, eps_fn = _start(shape, x_T, generator, device), _eps_fn(model, y, guidance, null_label)
    for i in reversed(range(schedule.num_steps)):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x0 = _x0(schedule, x, t, eps_fn(x, t), clip_x0)
        mean, var = posterior_mean_variance(schedule, x0, x, t)
        x = mean + var.sqrt() * _noise_like(x, generator) if i > 0 else mean
        if record is not None:
            record.append((i, x.cpu(), x0.cpu()))
    return x


def _ab(schedule: Schedule, t: int) -> float:
    """alpha-bar at an integer step, with t = -1 meaning clean data (alpha-bar = 1)."""
    return float(schedule.alphas_cumprod[t]) if t >= 0 else 1.0


def ddim_timesteps(num_steps: int, steps: int, t_start: int | None = None) -> torch.Tensor:
    """`steps` timesteps evenly spaced from t_start (default num_steps - 1) down to 0, descending, unique."""
    t_start = num_steps - 1 if t_start is None else t_start
    if not 1 <= steps <= t_start + 1:
        raise ValueError(f"steps must be in [1, {t_start + 1}], got {steps}")
    return torch.linspace(t_start, 0, steps, dtype=torch.float64).round().long()


def ddim_step(schedule: Schedule, x_t: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip_x0: float | None = None) -> torch.Tensor:
    """One DDIM update from t to t_prev < t (t_prev = -1: to clean data), DDIM eq. 12:

        x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
        sigma  = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev).
    eta = 0 is deterministic; eta = 1 on consecutive steps is DDPM's ancestral step.
    """
    tt = _check_t(schedule, x_t, t)
    x0 = _x0(schedule, x_t, tt, eps, clip_x0)
    if clip_x0 is not None:
        eps = predict_eps_from_x0(schedule, x_t, tt, x0)  # keep x0 and eps consistent after clipping
    ab, ab_prev = _ab(schedule, t), _ab(schedule, t_prev)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        x_prev = x_prev + sigma * (torch.randn_like(x_t) if noise is None else noise)
    return x_prev


@torch.no_grad()
def ddim_sample(model, schedule: Schedule, shape=None, *, steps: int = 50, eta: float = 0.0, x_T=None, y=None,
                guidance: float = 1.0, null_label=None, clip_x0: float | None = None, generator=None,
                device=None, record=None, t_start: int | None = None):
    """DDIM sampling on `steps` evenly spaced timesteps (Song et al. 2020); starts at t_start (default
    num_steps - 1)."""
    check_schedule(model, schedule, "ddim_sample")
    x, eps_fn = _start(shape, x_T, generator, device), _eps_fn(model, y, guidance, null_label)
    ts = ddim_timesteps(schedule.num_steps, steps, t_start).tolist()
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_fn(x, tt)
        noise = _noise_like(x, generator) if eta > 0 else None
        x_new = ddim_step(schedule, x, t, t_prev, eps, eta, noise, clip_x0)
        if record is not None:
            record.append((t, x.cpu(), _x0(schedule, x, tt, eps, clip_x0).cpu()))
        x = x_new
    return x


@torch.no_grad()
def ddim_invert(model, schedule: Schedule, x0: torch.Tensor, *, steps: int = 50, y=None, guidance: float = 1.0,
                null_label=None) -> torch.Tensor:
    """Run deterministic DDIM backwards: data x0 -> the noise x_T that `ddim_sample(eta=0)` maps back to x0.

    Each step uses the eps predicted at the current (lower) noise level, the usual approximation; it is
    close to exact when steps are small (Song et al. 2020, sec. 4.3; Dhariwal & Nichol 2021, app. F).
    """
    check_schedule(model, schedule, "ddim_invert")
    eps_fn = _eps_fn(model, y, guidance, null_label)
    ts = ddim_timesteps(schedule.num_steps, steps).tolist()[::-1]        # ascending: 0 .. num_steps - 1
    x = x0
    for t_prev, t in zip([-1] + ts[:-1], ts):
        ab_prev, ab = _ab(schedule, t_prev), _ab(schedule, t)
        eps = eps_fn(x, torch.full((x.shape[0],), max(t_prev, 0), dtype=torch.long, device=x.device))
        x0_hat = (x - math.sqrt(1 - ab_prev) * eps) / math.sqrt(ab_prev)
        x = math.sqrt(ab) * x0_hat + math.sqrt(1 - ab) * eps
    return x


@torch.no_grad()
def inpaint(model, schedule: Schedule, known: torch.Tensor, mask: torch.Tensor, *, steps: int = 50,
            resample: int = 1, y=None, guidance: float = 1.0, null_label=None, clip_x0: float | None = None,
            generator=None, record=None) -> torch.Tensor:
    """Fill the region where mask == 0, keeping `known` where mask == 1 (Lugmayr et al. 2022).

    At each of `steps` stochastic (eta = 1) DDIM steps the known region of x_{t_prev} is replaced by
    q_sample(known, t_prev), so the model only has to make the unknown part agree with it. With
    resample = r > 1 each step is repeated r times, re-noising x_{t_prev} back to t in between (RePaint), so
    the generated part has time to harmonise. The output equals `known` exactly where mask == 1.
    """
    if mask.dim() != known.dim() or any(m not in (1, k) for m, k in zip(mask.shape, known.shape)):
        raise ValueError(f"mask {tuple(mask.shape)} must broadcast to known {tuple(known.shape)} "
                         "(same rank, each size 1 or equal)")
    if resample < 1:
        raise ValueError(f"resample must be >= 1, got {resample}")
    check_schedule(model, schedule, "inpaint")
    mask = mask.to(known.dtype).expand_as(known)
    eps_fn, x = _eps_fn(model, y, guidance, null_label), _noise_like(known, generator)
    ts = ddim_timesteps(schedule.num_steps, steps).tolist()
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        for r in range(resample):
            x_prev = ddim_step(schedule, x, t, t_prev, eps_fn(x, tt), 1.0, _noise_like(x, generator), clip_x0)
            known_prev = known if t_prev < 0 else q_sample(
                schedule, known, torch.full_like(tt, t_prev), _noise_like(x, generator))
            x_prev = mask * known_prev + (1 - mask) * x_prev
            if r < resample - 1:                                          # back to t: q(x_t | x_{t_prev})
                ab_ratio = _ab(schedule, t) / _ab(schedule, t_prev)
                x = math.sqrt(ab_ratio) * x_prev + math.sqrt(1 - ab_ratio) * _noise_like(x, generator)
        if record is not None:
            record.append((t, x.cpu(), x_prev.cpu()))
        x = x_prev
    return mask * known + (1 - mask) * x


@torch.no_grad()
def sdedit(model, schedule: Schedule, x: torch.Tensor, *, strength: float = 0.5, steps: int = 50, eta: float = 0.0,
           y=None, guidance: float = 1.0, null_label=None, clip_x0: float | None = None, generator=None,
           record=None) -> torch.Tensor:
    """SDEdit (Meng et al. 2021): noise x to t0 = strength * num_steps, then denoise with DDIM from there.

    strength 0 returns (almost) x; 1 ignores it. In between the output keeps x's coarse layout and the
    model redraws the details -- a sketch or a corrupted digit becomes a clean one.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    check_schedule(model, schedule, "sdedit")
    t0 = max(int(round(strength * schedule.num_steps)) - 1, 0)
    x_t = q_sample(schedule, x, t0, _noise_like(x, generator))
    n = max(1, min(steps, t0 + 1, int(round(steps * strength))))
    return ddim_sample(model, schedule, x_T=x_t, steps=n, eta=eta, y=y, guidance=guidance, null_label=null_label,
                       clip_x0=clip_x0, generator=generator, record=record, t_start=t0)


# ----------------------------------------------------------------------------------------------------
# Flow matching (rectified flow): straight paths between data and noise, and the velocity along them
# ----------------------------------------------------------------------------------------------------
# Lipman et al., "Flow Matching for Generative Modeling", arXiv 2210.02747; Liu et al., "Flow Straight and Fast"
# (rectified flow), arXiv 2209.03003; logit-normal t from Esser et al., "Scaling Rectified Flow Transformers"
# (Stable Diffusion 3), arXiv 2403.03206. Time runs the other way from DDPM's index: t = 0 is data, t = 1 noise.
#
#     x_t = (1 - t) x_0 + t eps          eps ~ N(0, I), t in [0, 1]
#     v   = d x_t / dt = eps - x_0       the target; the model learns E[v | x_t] (the marginal velocity)
#     sample: integrate dx/dt = v(x, t) from t = 1 (noise) down to t = 0 with Euler or Heun steps

FM_TIME_SCALE = 1000.0  # the denoiser sees 1000 t: a timestep embedding built for steps 0..999 serves both objectives
T_SAMPLINGS = ("uniform", "logit-normal")


def fm_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise for t (B,) in [0, 1], broadcast over each sample's other dims."""
    _check_like("noise", noise, x0)
    t = t.to(x0.dtype).reshape(-1, *[1] * (x0.dim() - 1))                           # (B, 1, ..., 1)
    return (1 - t) * x0 + t * noise


def fm_sample_t(n: int, how: str = "logit-normal", loc: float = 0.0, scale: float = 1.0,
                generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """n training times in (0, 1): uniform, or logit-normal (sigmoid of N(loc, scale^2)), which spends more of the
    training on the middle of the path, where predicting the velocity is hardest (SD3's ablation)."""
    if how == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if how == "logit-normal":
        return torch.sigmoid(loc + scale * torch.randn(n, generator=generator, device=device))
    raise ValueError(f"unknown t sampling {how!r}; choose one of {T_SAMPLINGS}")


@dataclass
class FlowMatchingConfig:
    """What a `FlowMatching` wrapper is beyond its network's weights (a checkpoint stores it)."""
    t_sampling: str = "logit-normal"  # SD3's choice; "uniform" is Lipman et al.'s and Liu et al.'s
    loc: float = 0.0                  # logit-normal location: 0 centres the training times on t = 0.5
    scale: float = 1.0                # logit-normal spread: 1 still trains the ends, just less often
    num_classes: int | None = None    # labels 0 .. num_classes - 1; label num_classes is the null label
    p_uncond: float = 0.1             # label (or caption) dropout for classifier-free guidance
    denoiser: object = None           # the network's own config dataclass, nested
    captions: bool = False            # y is (B, L) caption token ids; the null caption is all padding (null label 0)

    def __post_init__(self):
        if self.captions and self.num_classes is not None:
            raise ValueError("FlowMatchingConfig: captions=True conditions on token ids; leave num_classes None")
        if self.t_sampling not in T_SAMPLINGS:
            raise ValueError(f"FlowMatchingConfig.t_sampling {self.t_sampling!r}: choose one of {T_SAMPLINGS}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be a probability in [0, 1], got {self.p_uncond}")


class FlowMatching(nn.Module):
    """Wrap a network `model(x_t, s, y=None) -> v` (s = 1000 t) so `minigen.train` fits the velocity of straight
    paths: loss = mean ||(eps - x0) - model(x_t, 1000 t, y)||^2 with t drawn as the config says, and labels
    dropped to the null label with probability p_uncond. `forward(x_t, t, y)` takes t in [0, 1]."""

    def __init__(self, model: nn.Module, config: FlowMatchingConfig | None = None, **overrides):
        super().__init__()
        denoiser = getattr(model, "config", None)
        config = replace(config or FlowMatchingConfig(), **overrides)
        self.config = replace(config, denoiser=denoiser if is_dataclass(denoiser) else None)
        self.model = model

    @property
    def null_label(self) -> int | None:
        return 0 if self.config.captions else self.config.num_classes

    def loss(self, batch) -> dict:
        """batch: x0, (x0, y), or (x0, y, noise): a third element pairs each sample with its own noise (reflow's
        couplings, `reflow_pairs`) instead of drawing fresh noise. y: labels, or caption token ids (captions)."""
        x0, y, noise = ((tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)) + (None, None))[:3]
        c = self.config
        if c.captions:
            if y is None:
                raise ValueError("a captions FlowMatching trains on (images, caption token ids) batches")
            y = drop_captions(y, c.p_uncond)
        else:
            y = drop_labels(y, c.num_classes, c.p_uncond)
        t = fm_sample_t(x0.shape[0], c.t_sampling, c.loc, c.scale, device=x0.device)
        noise = torch.randn_like(x0) if noise is None else noise
        v = self(fm_interpolate(x0, noise, t), t, y=y)
        return {"loss": (v - (noise - x0)).square().mean()}

    def forward(self, x_t, t, y=None):
        return self.model(x_t, FM_TIME_SCALE * t, y=y)


@torch.no_grad()
def fm_sample(model, shape=None, *, steps: int = 20, method: str = "euler", x_T=None, y=None,
              guidance: float = 1.0, null_label=None, generator=None, device=None, record=None) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from noise at t = 1 to t = 0 on `steps` equal steps. `model(x, t, y)` takes t in
    [0, 1] (a FlowMatching wrapper does). Euler uses one network call a step; Heun (the trapezoid rule with an
    Euler predictor) two, except on the last step (2 steps - 1 calls), and is second-order accurate. Guidance mixes
    the conditional and null-label velocities exactly as for noise (`guided_eps`)."""
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    x = _start(shape, x_T, generator, device)
    v_fn = _eps_fn(model, y, guidance, null_label)
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    for t, t_next in zip(ts[:-1], ts[1:]):
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        v = v_fn(x, tt)
        x_next = x + (t_next - t) * v                                                 # Euler: dt < 0
        if method == "heun" and t_next > 0:
            v_next = v_fn(x_next, torch.full_like(tt, t_next))
            x_next = x + (t_next - t) * 0.5 * (v + v_next)                            # trapezoid
        x = x_next
        if record is not None:
            record.append((t_next, x.cpu()))
    return x


@torch.no_grad()
def reflow_pairs(model, noise: torch.Tensor, *, y=None, steps: int = 16, method: str = "heun",
                 guidance: float = 1.0, null_label=None, batch_size: int = 1000) -> torch.Tensor:
    """Rectified flow's "reflow" data (Liu et al. 2022): the samples a trained flow model makes from `noise`
    (N, ...), batch by batch. Training on (sample, y, noise) triples straightens the paths, since each noise now
    has exactly one destination; few-step sampling then loses less. Returns the samples (N, ...), on noise's device."""
    out = []
    for i in range(0, len(noise), batch_size):
        part = None if y is None else y[i:i + batch_size]
        out.append(fm_sample(model, steps=steps, method=method, x_T=noise[i:i + batch_size], y=part,
                             guidance=guidance, null_label=null_label))
    return torch.cat(out)

