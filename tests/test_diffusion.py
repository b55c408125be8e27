"""minigen.diffusion against the papers' formulas, and the samplers against an exact epsilon-oracle.

The oracle: for data x0 ~ N(mu, s^2) (each coordinate), x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab), and the
optimal denoiser E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab) is known exactly, so
a correct sampler driven by it must reproduce N(mu, s^2).
"""
import dataclasses
import math

import numpy as np
import pytest
import torch

from minigen import diffusion as D

MU, SIGMA = 0.5, 0.3


class GaussianOracle(torch.nn.Module):
    """The exact eps for data ~ N(MU, SIGMA^2); labels shift the mean by `shift * y` (for guidance tests)."""

    def __init__(self, schedule, shift=0.0):
        super().__init__()
        self.schedule, self.shift = schedule, shift

    def forward(self, x, t, y=None):
        ab = D._gather(self.schedule.alphas_cumprod, t, x)
        mu = MU + (0.0 if y is None else self.shift * y.to(x.dtype).reshape(-1, *[1] * (x.dim() - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * mu) / (ab * SIGMA**2 + 1 - ab)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_matches_paper_formulas_in_float64(name):
    s = D.make_schedule(name, 1000)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64 and s.num_steps == 1000
    b = s.betas.numpy()
    if name == "linear":
        np.testing.assert_allclose(b, np.linspace(1e-4, 0.02, 1000), rtol=1e-12)
    else:  # alpha-bar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi / 2), wherever beta is not clipped
        f = np.cos((np.arange(1001) / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
        ok = b < 0.999
        np.testing.assert_allclose(s.alphas_cumprod.numpy()[ok], (f[1:] / f[0])[ok], rtol=1e-10)
    ab = np.exp(np.cumsum(np.log1p(-b)))
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), ab, rtol=1e-10)
    # posterior by Bayes' rule on two Gaussians: precision adds, means weight by precision
    ab_prev = ab[:-1]                              # t >= 1; t = 0 (no x_{-1} uncertainty) is checked below
    var = 1 / (1 / (1 - ab_prev) + (1 - b[1:]) / b[1:])
    c1 = var * np.sqrt(ab_prev) / (1 - ab_prev)
    c2 = var * np.sqrt(1 - b[1:]) / b[1:]
    np.testing.assert_allclose(s.posterior_variance.numpy()[1:], var, rtol=1e-9)
    np.testing.assert_allclose(s.posterior_mean_coef1.numpy()[1:], c1, rtol=1e-9)
    np.testing.assert_allclose(s.posterior_mean_coef2.numpy()[1:], c2, rtol=1e-9)
    assert abs(s.posterior_mean_coef1[0] - 1) < 1e-12 and s.posterior_variance[0] == 0.0  # x_{-1} = x_0 exactly
    assert torch.all(s.snr[1:] < s.snr[:-1])  # noise only grows


def test_unknown_schedule_and_bad_num_steps_are_clear_errors():
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        D.make_schedule("quadratic", 100)
    with pytest.raises(ValueError, match="num_steps must be an integer"):
        D.make_schedule("linear", 1)
    assert not hasattr(D.make_schedule("linear", 10), "T")  # the count is num_steps; T is the letter for frames


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_sample_statistics_and_step_by_step_noising_agree(name):
    s = D.make_schedule(name, 200)
    n, x0 = 100_000, torch.full((100_000, 1), 0.7, dtype=torch.float64)
    for t in (5, 100, 190):
        xt = D.q_sample(s, x0, t)
        ab = s.alphas_cumprod[t].item()
        assert abs(xt.mean().item() - math.sqrt(ab) * 0.7) < 5 / math.sqrt(n)
        assert abs(xt.var().item() / (1 - ab) - 1) < 0.02
    x = x0.clone()                                  # step by step: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z
    for t in range(101):
        x = (1 - s.betas[t]).sqrt() * x + s.betas[t].sqrt() * torch.randn_like(x)
    ab = s.alphas_cumprod[100].item()
    assert abs(x.mean().item() - math.sqrt(ab) * 0.7) < 5 / math.sqrt(n)
    assert abs(x.var().item() / (1 - ab) - 1) < 0.02


def test_predict_x0_inverts_q_sample_and_posterior_shapes():
    s = D.make_schedule("cosine", 100)
    x0, noise, t = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5), torch.tensor([0, 10, 50, 99])
    xt = D.q_sample(s, x0, t, noise)
    torch.testing.assert_close(D.predict_x0_from_eps(s, xt, t, noise), x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(D.predict_eps_from_x0(s, xt, t, x0), noise, atol=1e-4, rtol=1e-4)
    mean, var = D.posterior_mean_variance(s, x0, xt, t)
    assert mean.shape == x0.shape and var.shape == (4, 1, 1, 1)


def test_wrong_shapes_give_clear_errors():
    s = D.make_schedule("linear", 100)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"t must be \(B,\)"):
        D.q_sample(s, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"integer timesteps in \[0, 100\)"):
        D.q_sample(s, x, torch.full((4,), 100))
    with pytest.raises(ValueError, match="noise must have the shape of x"):
        D.q_sample(s, x, 3, torch.randn(4, 3))
    oracle = GaussianOracle(s)
    with pytest.raises(ValueError, match="mask"):
        D.inpaint(oracle, s, torch.randn(2, 1, 4, 4), torch.ones(2, 4, 4), steps=5)
    with pytest.raises(ValueError, match="give the sample shape"):
        D.ddim_sample(oracle, s, steps=5)
    with pytest.raises(ValueError, match="steps must be in"):
        D.ddim_sample(oracle, s, (2, 2), steps=101)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_both_samplers_recover_the_data_distribution_with_an_exact_oracle(name):
    s = D.make_schedule(name, 500)
    oracle, g = GaussianOracle(s), torch.Generator().manual_seed(0)
    shape = (4000, 2)
    for x in (D.ddpm_sample(oracle, s, shape, generator=g),
              D.ddim_sample(oracle, s, shape, steps=250, eta=0.0, generator=g),
              D.ddim_sample(oracle, s, shape, steps=500, eta=1.0, generator=g)):   # eta = 1 on every step: DDPM
        assert abs(x.mean().item() - MU) < 0.02, x.mean()
        assert abs(x.std().item() / SIGMA - 1) < 0.05, x.std()
    # few steps under-disperse (discretisation error), and the error shrinks as steps grow
    stds = [D.ddim_sample(oracle, s, shape, steps=n, generator=g).std().item() for n in (10, 40)]
    assert stds[0] < stds[1] < SIGMA * 1.01


def test_ddim_eta0_is_deterministic_and_inversion_regenerates_the_sample():
    s = D.make_schedule("cosine", 1000)
    oracle = GaussianOracle(s)
    x_T = torch.randn(64, 2, dtype=torch.float64)
    a = D.ddim_sample(oracle, s, x_T=x_T, steps=250, generator=torch.Generator().manual_seed(1))
    b = D.ddim_sample(oracle, s, x_T=x_T, steps=250, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    eps = torch.randn_like(x_T)
    step = [D.ddim_step(s, x_T, 500, 480, eps, eta=0.0, noise=torch.randn_like(x_T)) for _ in range(2)]
    assert torch.equal(step[0], step[1])
    errors = []
    for steps in (50, 250):   # inversion uses eps at the lower noise level of each step: error shrinks with steps
        sample = D.ddim_sample(oracle, s, x_T=x_T, steps=steps)
        x_T_back = D.ddim_invert(oracle, s, sample, steps=steps)
        errors.append((D.ddim_sample(oracle, s, x_T=x_T_back, steps=steps) - sample).abs().max().item())
    assert errors[1] < 0.03 and errors[1] < errors[0] / 3, errors
    assert (x_T_back - x_T).abs().max() < 0.1


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    s = D.make_schedule("cosine", 100)
    calls = []

    def model(x, t, y=None):
        calls.append(len(x))
        return x * 0.1 + (0.0 if y is None else y.float().reshape(-1, 1))

    x, t, y = torch.randn(5, 3), torch.full((5,), 10), torch.arange(5)
    torch.testing.assert_close(D.guided_eps(model, x, t, y, 1.0, null_label=9), model(x, t, y))
    torch.testing.assert_close(D.guided_eps(model, x, t, y, 0.0, null_label=9), model(x, t, torch.full_like(y, 9)))
    g3 = D.guided_eps(model, x, t, y, 3.0, null_label=9)
    u, c = model(x, t, torch.full_like(y, 9)), model(x, t, y)
    torch.testing.assert_close(g3, u + 3.0 * (c - u))
    with pytest.raises(ValueError, match="null_label"):
        D.guided_eps(model, x, t, y, 2.0)


def test_inpainting_leaves_known_pixels_unchanged():
    s = D.make_schedule("cosine", 100)
    known = torch.rand(3, 1, 6, 6) * 2 - 1
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3] = 1
    out = D.inpaint(GaussianOracle(s), s, known, mask, steps=10, resample=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[..., :3], known[..., :3])
    assert not torch.equal(out[..., 3:], known[..., 3:])
    assert torch.isfinite(out).all()


def test_sdedit_keeps_the_input_at_low_strength():
    s = D.make_schedule("cosine", 1000)
    x = torch.full((256, 2), MU)
    low = D.sdedit(GaussianOracle(s), s, x, strength=0.02, steps=20, generator=torch.Generator().manual_seed(0))
    high = D.sdedit(GaussianOracle(s), s, x, strength=1.0, steps=20, generator=torch.Generator().manual_seed(0))
    assert (low - x).abs().mean() < 0.05 < (high - x).abs().mean()
    with pytest.raises(ValueError, match="strength"):
        D.sdedit(GaussianOracle(s), s, x, strength=0.0)


def test_diffusion_loss_and_label_dropout():
    s = D.make_schedule("cosine", 50)
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y=None):
            seen["y"], seen["t"] = y, t
            return x * self.w

    wrapped = D.Diffusion(Spy(), s, num_classes=10, p_uncond=1.0)
    out = wrapped.loss((torch.randn(32, 1, 4, 4), torch.arange(32) % 10))
    assert set(out) == {"loss"} and out["loss"].dim() == 0 and abs(out["loss"].item() - 1) < 0.2
    assert torch.equal(seen["y"], torch.full((32,), 10)) and seen["t"].max() < 50
    D.Diffusion(Spy(), s, num_classes=10, p_uncond=0.0).loss((torch.randn(8, 2), torch.arange(8)))
    assert torch.equal(seen["y"], torch.arange(8))
    D.Diffusion(Spy(), s).loss(torch.randn(8, 2))
    assert seen["y"] is None
    with pytest.raises(ValueError, match="p_uncond"):
        D.Diffusion(Spy(), s, p_uncond=1.5)


class Denoiser(torch.nn.Module):
    """A denoiser with a config dataclass, as the course's models have: eps_hat = w * x."""

    @dataclasses.dataclass
    class Config:
        width: int = 4
        mults: tuple = (1, 2)   # a tuple: must survive a checkpoint's save and load

    def __init__(self, config=None):
        super().__init__()
        self.config = config or Denoiser.Config()
        self.w = torch.nn.Parameter(torch.zeros(self.config.width))

    def forward(self, x, t, y=None):
        return x * self.w.mean()


def test_diffusion_config_holds_the_schedule_labels_and_the_denoisers_config():
    wrapped = D.Diffusion(Denoiser(), D.make_schedule("linear", 30), num_classes=10, p_uncond=0.2)
    assert wrapped.config == D.DiffusionConfig(schedule="linear", num_steps=30, parameterization="eps",
                                               num_classes=10, p_uncond=0.2, denoiser=Denoiser.Config())
    assert dataclasses.asdict(wrapped.config)["denoiser"] == {"width": 4, "mults": (1, 2)}
    assert wrapped.null_label == 10 and wrapped.p_uncond == 0.2
    rebuilt = D.Diffusion.from_config(Denoiser(), wrapped.config)
    assert rebuilt.config == wrapped.config and torch.equal(rebuilt.schedule.betas, wrapped.schedule.betas)
    with pytest.raises(ValueError, match="is not the one the DiffusionConfig names"):
        D.Diffusion.from_config(Denoiser(Denoiser.Config(width=5)), wrapped.config)
    with pytest.raises(ValueError, match="parameterization 'v' is not implemented"):
        D.DiffusionConfig(parameterization="v")
    with pytest.raises(ValueError, match="p_uncond must be a probability"):
        D.Diffusion(Denoiser(), D.make_schedule("linear", 30), p_uncond=1.5)
    assert D.Diffusion(lambda x, t, y=None: x, D.make_schedule("linear", 30)).config.denoiser is None


@pytest.mark.parametrize("sampler", ["ddpm_sample", "ddim_sample", "ddim_invert", "inpaint", "sdedit"])
def test_samplers_refuse_a_schedule_other_than_the_models(sampler):
    trained = D.make_schedule("cosine", 100)
    model = D.Diffusion(Denoiser(), trained)
    x = torch.randn(2, 1, 4, 4)
    calls = {"ddpm_sample": lambda s: D.ddpm_sample(model, s, x.shape),
             "ddim_sample": lambda s: D.ddim_sample(model, s, x.shape, steps=5),
             "ddim_invert": lambda s: D.ddim_invert(model, s, x, steps=5),
             "inpaint": lambda s: D.inpaint(model, s, x, torch.ones(1, 1, 4, 4), steps=5),
             "sdedit": lambda s: D.sdedit(model, s, x, steps=5)}
    for other, words in ((D.make_schedule("cosine", 1000), "num_steps=100.*num_steps=1000"),
                         (D.make_schedule("linear", 100), "'cosine'.*'linear'")):
        with pytest.raises(ValueError, match=f"{sampler}: the model was trained on .*{words}"):
            calls[sampler](other)
    assert calls[sampler](trained).shape == x.shape          # its own schedule is fine
    assert calls[sampler](D.make_schedule("cosine", 100)).shape == x.shape  # an equal one too


def test_a_checkpoint_stores_the_schedule_and_refuses_another(tmp_path):
    """minigen.train saves asdict(model.config): the nested denoiser config survives save and load (tuples too),
    and a checkpoint trained on another schedule is a CheckpointError naming the differing fields."""
    from minigen.train import CheckpointError, TrainConfig, Trainer, read_checkpoint

    model = D.Diffusion(Denoiser(), D.make_schedule("cosine", 100), num_classes=10)
    path = Trainer(model, torch.randn(16, 1, 4, 4), TrainConfig(steps=1, batch_size=4, progress=False)).fit().save(
        tmp_path / "run.pt")
    state = read_checkpoint(path, D.Diffusion(Denoiser(), D.make_schedule("cosine", 100), num_classes=10))
    assert state["config"] == dataclasses.asdict(model.config) and state["config"]["denoiser"]["mults"] == (1, 2)
    with pytest.raises(CheckpointError, match=r"another config.*'num_steps': \(100, 1000\)"):
        read_checkpoint(path, D.Diffusion(Denoiser(), D.make_schedule("cosine", 1000), num_classes=10))
    with pytest.raises(CheckpointError, match=r"another config.*'schedule': \('cosine', 'linear'\)"):
        read_checkpoint(path, D.Diffusion(Denoiser(), D.make_schedule("linear", 100), num_classes=10))
    with pytest.raises(CheckpointError, match=r"another config.*'denoiser.mults': \(\(1, 2\), \(1, 3\)\)"):
        read_checkpoint(path, D.Diffusion(Denoiser(Denoiser.Config(mults=(1, 3))), D.make_schedule("cosine", 100),
                                          num_classes=10))


class CorrelatedOracle(torch.nn.Module):
    """The exact eps for two-pixel data ~ N(0, [[1, r], [r, 1]]): x_t ~ N(0, ab C + (1 - ab) I), so
    eps = sqrt(1 - ab) (ab C + (1 - ab) I)^-1 x_t."""

    def __init__(self, schedule, r):
        super().__init__()
        self.schedule, self.cov = schedule, torch.tensor([[1.0, r], [r, 1.0]], dtype=torch.float64)

    def forward(self, x, t, y=None):
        ab = self.schedule.alphas_cumprod[t].to(torch.float64)                          # (B,)
        cov = ab[:, None, None] * self.cov + (1 - ab)[:, None, None] * torch.eye(2, dtype=torch.float64)
        eps = (1 - ab).sqrt()[:, None] * torch.linalg.solve(cov, x.reshape(len(x), 2).double().unsqueeze(-1))[..., 0]
        return eps.to(x.dtype).reshape(x.shape)


def test_inpainting_draws_the_conditional_and_resampling_harmonises():
    """The whole loop, not just its last line: with an exact denoiser of correlated data, pixel 2 inpainted from a
    known pixel 1 = 1.5 must follow p(x2 | x1) = N(r x1, 1 - r^2). Plain replacement (resample = 1) leaves the two
    halves out of step and biases the mean toward the prior's 0; RePaint's resampling closes the gap."""
    r, s = 0.9, D.make_schedule("cosine", 1000)
    known = torch.zeros(4000, 1, 1, 2)
    known[..., 0] = 1.5
    mask = torch.zeros(1, 1, 1, 2)
    mask[..., 0] = 1
    errors = []
    for resample in (1, 3, 10):
        out = D.inpaint(CorrelatedOracle(s, r), s, known, mask, steps=50, resample=resample,
                        generator=torch.Generator().manual_seed(0))
        errors.append(abs(out[..., 1].mean().item() - r * 1.5))
    print(f"|mean error| of the inpainted pixel at resample 1, 3, 10: {errors}")
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.08
