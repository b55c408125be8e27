"""Checkers for notebook 06 (latent DiT and flow matching): adaLN's modulation, and the flow-matching loss.

    check_modulate(my_modulate)     my_modulate(x (B, N, C), shift (B, C), scale (B, C)) -> (B, N, C)
    check_fm_loss(my_fm_loss)       my_fm_loss(model, x0, noise, t, y) -> a scalar tensor

Both are compared with minigen on fixed inputs of odd sizes (B != N, so a missing broadcast shows).
"""
import torch

from minigen import diffusion as D
from minigen.nn import modulate

from ._check import assert_close, checker, solution_for


@checker("dit.modulate")
def check_modulate(fn) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=g)                                     # (B, N, C), B != N
    shift, scale = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    assert_close("modulate", fn(x, shift, scale), modulate(x, shift, scale),
                 hint="x * (1 + scale) + shift, with shift and scale given a token axis, (B, 1, C), so every token "
                      "of a sample gets its sample's numbers")
    zero = torch.zeros(3, 8)
    assert_close("modulate with shift = scale = 0", fn(x, zero, zero), x, hint="scale = 0 must leave x unchanged")


def _model(x_t, t, y):
    """A stand-in velocity network: any fixed function of (x_t, t, y) will do for checking a loss."""
    return 0.5 * x_t - t.reshape(-1, 1, 1, 1) + 0.1 * y.reshape(-1, 1, 1, 1)


@checker("dit.fm_loss")
def check_fm_loss(fn) -> None:
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    t, y = torch.tensor([0.1, 0.5, 0.7, 0.95]), torch.tensor([0, 3, 1, 2])
    expected = (_model(D.fm_interpolate(x0, noise, t), t, y) - (noise - x0)).square().mean()
    got = fn(_model, x0, noise, t, y)
    assert_close("fm_loss", got, expected, atol=1e-5,
                 hint="x_t = (1 - t) x0 + t noise (t reshaped to (B, 1, 1, 1)); the target is the path's velocity "
                      "d x_t / dt = noise - x0; the loss is the mean squared error of model(x_t, t, y) against it")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("dit.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("dit.modulate")
def my_modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]                    # (B, N, C) * (B, 1, C)


@solution_for("dit.fm_loss")
def my_fm_loss(model, x0, noise, t, y):
    tt = t.reshape(-1, *[1] * (x0.dim() - 1))                                 # (B, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    return (model(x_t, t, y) - (noise - x0)).square().mean()
