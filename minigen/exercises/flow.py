"""Checkers for notebook 03 (normalizing flows).

Exercise 1: an affine coupling on 2-D points, forward and inverse, with its log-determinant.
    coupling_forward(x, net) -> (y, logdet)   and   coupling_inverse(y, net) -> x
    where x is (B, 2), net maps the kept coordinate x[:, :1] (B, 1) to (B, 2) = [log_s, t], and
    y1 = x1,  y2 = x2 * exp(log_s) + t,  logdet = log_s (one number per point).
Exercise 2: the log-determinant of Glow's invertible 1x1 convolution.
    conv1x1_logdet(weight, height, width) -> the log |det| of the whole map on a (C, H, W) image, a scalar.
"""
import torch
from torch import nn

from ._check import assert_close, checker, solution_for


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 2)).double()


def _reference_forward(x, net):
    log_s, t = net(x[:, :1]).chunk(2, dim=1)                          # (B, 1) each
    return torch.cat([x[:, :1], x[:, 1:] * log_s.exp() + t], dim=1), log_s.squeeze(1)


@checker("flow.affine_coupling")
def check_affine_coupling(coupling_forward, coupling_inverse) -> None:
    """Compare the student's coupling with the reference; also check inverse(forward(x)) == x and the log-det
    against a brute-force Jacobian determinant."""
    net = _net()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        expected_y, expected_logdet = _reference_forward(x, net)
        out = coupling_forward(x, net)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise AssertionError("coupling_forward must return a pair (y, logdet)")
    y, logdet = out
    assert_close("coupling_forward y", y, expected_y, atol=1e-8,
                 hint="y1 = x1 passes unchanged; y2 = x2 * exp(log_s) + t with log_s, t = net(x[:, :1]).chunk(2, 1)")
    assert_close("coupling_forward logdet", logdet, expected_logdet, atol=1e-8,
                 hint="the Jacobian is triangular: its log|det| is log_s alone, shape (B,)")
    with torch.no_grad():
        back = coupling_inverse(expected_y, net)
    assert_close("coupling_inverse", back, x, atol=1e-8,
                 hint="y1 = x1, so net(y[:, :1]) gives the same log_s, t; then x2 = (y2 - t) * exp(-log_s)")
    jac = torch.autograd.functional.jacobian(lambda v: coupling_forward(v[None], net)[0][0], x[0])  # (2, 2)
    assert_close("logdet vs brute-force Jacobian", logdet[:1], torch.linalg.slogdet(jac)[1][None], atol=1e-8)


def reference_conv1x1_logdet(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return height * width * torch.linalg.slogdet(weight)[1]


@checker("flow.conv1x1_logdet")
def check_conv1x1_logdet(conv1x1_logdet) -> None:
    """The student's formula against the brute-force log|det| of the full (C H W) x (C H W) Jacobian."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 3, generator=g, dtype=torch.float64) + 2 * torch.eye(3, dtype=torch.float64)
    h, w = 2, 3

    def conv(v):                                                       # v: (C*H*W,) -> (C*H*W,)
        x = v.view(1, 3, h, w)                                         # (1, C, H, W)
        return torch.nn.functional.conv2d(x, weight[:, :, None, None]).flatten()

    brute = torch.linalg.slogdet(torch.autograd.functional.jacobian(conv, torch.randn(3 * h * w,
                                 generator=g, dtype=torch.float64)))[1]
    got = conv1x1_logdet(weight, h, w)
    got = torch.as_tensor(got, dtype=torch.float64)
    assert_close("conv1x1_logdet", got.reshape(()), brute, atol=1e-8,
                 hint="the same C x C matrix acts on every one of the H*W pixels: the Jacobian is block diagonal")
    assert_close("conv1x1_logdet (formula)", got.reshape(()), reference_conv1x1_logdet(weight, h, w), atol=1e-8)


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("flow.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("flow.affine_coupling")
def coupling_forward(x, net):
    log_s, t = net(x[:, :1]).chunk(2, dim=1)
    return torch.cat([x[:, :1], x[:, 1:] * log_s.exp() + t], dim=1), log_s.squeeze(1)


@solution_for("flow.affine_coupling")
def coupling_inverse(y, net):
    log_s, t = net(y[:, :1]).chunk(2, dim=1)
    return torch.cat([y[:, :1], (y[:, 1:] - t) * torch.exp(-log_s)], dim=1)


@solution_for("flow.conv1x1_logdet")
def conv1x1_logdet(weight, height, width):
    return height * width * torch.linalg.slogdet(weight)[1]
