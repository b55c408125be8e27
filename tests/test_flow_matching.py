"""Flow matching: the straight path and its velocity, the samplers against an exact velocity field, the wrapper's
config in checkpoints, and a DiT trained with it."""
import math

import pytest
import torch

from minigen import diffusion as D
from minigen.models.dit import DiT, DiTConfig
from minigen.train import CheckpointError, TrainConfig, Trainer, read_checkpoint


def test_path_endpoints_and_velocity_is_its_time_derivative():
    x0, noise = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    assert torch.equal(D.fm_interpolate(x0, noise, torch.zeros(4)), x0)
    assert torch.equal(D.fm_interpolate(x0, noise, torch.ones(4)), noise)
    t, h = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64), 1e-6
    x0, noise = x0.double(), noise.double()
    numeric = (D.fm_interpolate(x0, noise, t + h) - D.fm_interpolate(x0, noise, t - h)) / (2 * h)
    torch.testing.assert_close(numeric, noise - x0)
    with pytest.raises(ValueError, match="noise must have the shape of x"):
        D.fm_interpolate(x0, noise[:, :2], t)


def test_logit_normal_times_concentrate_in_the_middle():
    g = torch.Generator().manual_seed(0)
    t = D.fm_sample_t(100_000, "logit-normal", generator=g)
    u = D.fm_sample_t(100_000, "uniform", generator=g)
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.01
    middle = lambda s: ((s > 0.25) & (s < 0.75)).float().mean().item()  # noqa: E731
    assert middle(t) > middle(u) + 0.1                                   # 0.73 vs 0.50
    with pytest.raises(ValueError, match="unknown t sampling"):
        D.fm_sample_t(3, "beta")


class ExactVelocity(torch.nn.Module):
    """The marginal velocity E[eps - x0 | x_t = x] for 1-D data x0 ~ N(m, s^2): both are jointly Gaussian with x_t,
    so the conditional means are linear in x. Integrating it from N(0, 1) at t = 1 lands exactly on N(m, s^2)."""

    def __init__(self, m: float, s: float):
        super().__init__()
        self.m, self.s = m, s

    def forward(self, x, t, y=None):
        t = t.to(x.dtype).reshape(-1, *[1] * (x.dim() - 1))
        var = (1 - t) ** 2 * self.s ** 2 + t ** 2                       # Var(x_t)
        centred = x - (1 - t) * self.m
        e_x0 = self.m + (1 - t) * self.s ** 2 / var * centred
        e_eps = t / var * centred
        return e_eps - e_x0


def test_samplers_reach_the_data_distribution_and_heun_beats_euler():
    model, g = ExactVelocity(2.0, 0.5), torch.Generator().manual_seed(0)
    noise = torch.randn(20_000, 1, dtype=torch.float64, generator=g)

    def error(method, steps):
        x = D.fm_sample(model, x_T=noise.clone(), steps=steps, method=method)
        return abs(x.mean().item() - 2.0) + abs(x.std().item() - 0.5)

    fine = error("heun", 200)
    print(f"|mean - 2| + |std - 0.5|: heun-200 {fine:.4f}, euler-10 {error('euler', 10):.4f}, "
          f"heun-10 {error('heun', 10):.4f}")
    assert fine < 0.02                                                   # sampling noise of 20k draws
    assert error("heun", 10) < error("euler", 10)
    with pytest.raises(ValueError, match="method must be 'euler' or 'heun'"):
        D.fm_sample(model, (2, 1), method="rk4")


def test_trains_a_dit_and_stores_its_config(tmp_path):
    torch.manual_seed(0)
    dit = DiTConfig(in_channels=2, input_size=4, patch_size=2, dim=32, depth=2, heads=2, num_classes=3)
    data = torch.randn(64, 2, 4, 4) * 0.1 + torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    model = D.FlowMatching(DiT(dit), num_classes=3)
    trainer = Trainer(model, (data, torch.arange(64) % 3), TrainConfig(steps=80, batch_size=32, lr=3e-3,
                                                                       log_every=10, progress=False)).fit()
    losses = trainer.history["loss"]
    assert losses[-1] < 0.6 * losses[0], losses
    x = D.fm_sample(model, (64, 2, 4, 4), steps=10, method="heun", y=torch.arange(64) % 3, guidance=1.5,
                    null_label=model.null_label, generator=torch.Generator().manual_seed(0))
    mean_error = (x.mean(0) - data.mean(0)).abs().mean().item()
    print(f"sampled mean vs data mean: {mean_error:.3f} (data spread {data.mean(0).abs().mean().item():.3f})")
    assert mean_error < 0.25
    path = trainer.save(tmp_path / "fm.pt")
    read_checkpoint(path, D.FlowMatching(DiT(dit), num_classes=3))
    with pytest.raises(CheckpointError, match="'t_sampling': \\('logit-normal', 'uniform'\\)"):
        read_checkpoint(path, D.FlowMatching(DiT(dit), num_classes=3, t_sampling="uniform"))


class OfTime(torch.nn.Module):
    """A velocity function f(x, t) as the network FlowMatching wraps: it is called with s = 1000 t."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x, s, y=None):
        return self.f(x, s / D.FM_TIME_SCALE)


def test_oracle_velocity_has_zero_loss_on_a_point_mass_and_the_least_on_a_gaussian():
    """Data concentrated at m (a Gaussian of zero width): every x_t has one pair through it, so the exact velocity
    (x - m) / t makes the loss zero. With width s > 0 pairs cross and the loss stays above zero, but the exact
    marginal velocity (ExactVelocity) still scores below any perturbation of it."""
    m, exact = 1.5, ExactVelocity(1.5, 0.5)
    point = D.FlowMatching(OfTime(lambda x, t: (x - m) / t.reshape(-1, 1)), t_sampling="uniform")
    assert point.loss(torch.full((4096, 1), m))["loss"].item() < 1e-10
    data = m + 0.5 * torch.randn(200_000, 1, dtype=torch.float64)

    def loss(bias):
        torch.manual_seed(0)                                             # the same t and noise for each
        return D.FlowMatching(OfTime(lambda x, t: exact(x, t) + bias), t_sampling="uniform").loss(data)["loss"]

    best = loss(0.0).item()
    print(f"flow-matching loss of the exact velocity {best:.4f}; biased by +-0.1: {loss(0.1):.4f}, {loss(-0.1):.4f}")
    assert best > 0.01 and loss(0.1) > best and loss(-0.1) > best


def test_reflow_pairs_are_the_samplers_output_and_train_with_their_own_noise():
    model, noise = ExactVelocity(2.0, 0.5), torch.randn(2500, 1, dtype=torch.float64)
    pairs = D.reflow_pairs(model, noise, steps=8, method="heun", batch_size=1000)
    torch.testing.assert_close(pairs, D.fm_sample(model, x_T=noise.clone(), steps=8, method="heun"))
    # a batch (x0, y, noise) is trained on that noise: the straight line's own velocity scores zero
    line = D.FlowMatching(OfTime(lambda x, t: noise[:8] - pairs[:8]), t_sampling="uniform")
    assert line.loss((pairs[:8], None, noise[:8]))["loss"].item() < 1e-20
    assert line.loss((pairs[:8], None))["loss"].item() > 0.1           # fresh noise: not the pair's line
