"""Checkers for notebook 04 (diffusion): the forward process in one line, and one DDIM step.

    check_q_sample(my_q_sample)     my_q_sample(alphas_cumprod, x0, t, noise) -> x_t
    check_ddim_step(my_ddim_step)   my_ddim_step(x_t, eps, ab_t, ab_prev) -> x_prev   (eta = 0)

Both are compared with minigen.diffusion on fixed inputs (several timesteps, image-shaped tensors).
"""
import math

import torch

from minigen import diffusion as D

from ._check import assert_close, checker, solution_for


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    schedule = D.make_schedule("cosine", 1000)
    x0 = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(6, 1, 8, 8, generator=g)
    t = torch.tensor([0, 1, 99, 500, 900, 999])
    return schedule, x0, noise, t


@checker("diffusion.q_sample")
def check_q_sample(fn) -> None:
    """fn(alphas_cumprod (num_steps,) float64, x0 (B, ...), t (B,) long, noise like x0) -> x_t like x0."""
    schedule, x0, noise, t = _inputs()
    got = fn(schedule.alphas_cumprod, x0, t, noise)
    assert_close("q_sample", got, D.q_sample(schedule, x0, t, noise), atol=1e-5,
                 hint="x_t = sqrt(ab[t]) * x0 + sqrt(1 - ab[t]) * noise, with ab[t] reshaped to (B, 1, 1, 1) "
                      "so it broadcasts over each image, and cast to x0's dtype")


@checker("diffusion.ddim_step")
def check_ddim_step(fn) -> None:
    """fn(x_t, eps, ab_t, ab_prev) -> x_prev for eta = 0, with ab_* Python floats (ab_prev = 1 at the end)."""
    schedule, x0, noise, _ = _inputs(1)
    for t, t_prev in ((999, 979), (500, 400), (20, 0), (0, -1)):
        x_t = D.q_sample(schedule, x0, t, noise)
        eps = 0.9 * noise + 0.05                          # an imperfect prediction, as a real model gives
        ab_t = float(schedule.alphas_cumprod[t])
        ab_prev = float(schedule.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        expected = D.ddim_step(schedule, x_t, t, t_prev, eps, eta=0.0)
        assert_close(f"ddim_step t={t}->{t_prev}", fn(x_t, eps, ab_t, ab_prev), expected, atol=1e-4, rtol=1e-4,
                     hint="predict x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), then "
                          "x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("diffusion.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("diffusion.q_sample")
def my_q_sample(alphas_cumprod, x0, t, noise):
    ab = alphas_cumprod[t].to(x0.dtype).reshape(-1, *[1] * (x0.dim() - 1))   # (B, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


@solution_for("diffusion.ddim_step")
def my_ddim_step(x_t, eps, ab_t, ab_prev):
    x0_hat = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    return math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev) * eps
