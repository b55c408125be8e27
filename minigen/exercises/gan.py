"""Checkers for notebook 05 (GANs): the non-saturating generator loss, and the R1 penalty.

    check_generator_loss(my_generator_loss)   my_generator_loss(fake_logits (B,)) -> a scalar tensor
    check_r1_penalty(my_r1_penalty)           my_r1_penalty(judge, real (B, C, H, W)) -> a scalar tensor

Both are compared with minigen.models.gan on fixed inputs, including logits large enough to overflow a naive
log(sigmoid(.)), and the penalty must carry gradient to the judge's weights (it is a loss the judge minimises).
"""
import torch
import torch.nn.functional as F
from torch import nn

from minigen.models.gan import generator_loss, r1_penalty

from ._check import assert_close, checker, solution_for


@checker("gan.generator_loss")
def check_generator_loss(fn) -> None:
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0])
    assert_close("generator loss", fn(logits), generator_loss(logits),
                 hint="non-saturating: the mean over fakes of -log sigmoid(D(G(z))) = softplus(-logit); the "
                      "saturating form log(1 - sigmoid) has the opposite sign and no gradient when the judge wins")
    lost = torch.tensor([-120.0, -80.0, 2.0])                # a judge that is very sure these are fake
    got = fn(lost)
    if not torch.isfinite(torch.as_tensor(got)).all():
        raise AssertionError("generator loss is not finite for logits like -120: sigmoid(-120) rounds to 0 in "
                             "float32 and log(0) = -inf. Use torch.nn.functional.softplus(-logits), which equals "
                             "-log sigmoid(logits) and stays finite")
    assert_close("generator loss at large logits", got, generator_loss(lost), atol=1e-3)


class _Judge(nn.Module):
    """A fixed judge with a known, input-dependent gradient: D(x) = sum(w * x^2) + sum(v * x)."""

    def __init__(self, shape):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = nn.Parameter(torch.randn(shape, generator=g) * 0.1)
        self.v = nn.Parameter(torch.randn(shape, generator=g))

    def forward(self, x):
        return (self.w * x.square() + self.v * x).flatten(1).sum(1)      # (B,)


@checker("gan.r1_penalty")
def check_r1_penalty(fn) -> None:
    g = torch.Generator().manual_seed(5)
    real = torch.randn(3, 1, 4, 5, generator=g)              # B = 3, an odd image size
    judge = _Judge((1, 4, 5))
    x = real.clone().requires_grad_(True)
    expected = r1_penalty(judge(x), x)
    got = fn(judge, real.clone())
    assert_close("R1 penalty", got, expected.detach(), atol=1e-5,
                 hint="R1 = mean over real images of the squared norm of grad_x D(x): make x require grad, take "
                      "torch.autograd.grad(D(x).sum(), x), square, sum over pixels, then average over the batch")
    if got.grad_fn is None:
        raise AssertionError("the penalty carries no gradient to the judge's weights: pass create_graph=True to "
                             "torch.autograd.grad, so the judge can minimise the penalty")
    (want,) = torch.autograd.grad(expected, judge.w)
    (have,) = torch.autograd.grad(got, judge.w)
    assert_close("gradient of the penalty w.r.t. the judge's weights", have, want, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("gan.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("gan.generator_loss")
def my_generator_loss(fake_logits):
    return F.softplus(-fake_logits).mean()                                   # -log sigmoid(logit), stably


@solution_for("gan.r1_penalty")
def my_r1_penalty(judge, real):
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(judge(real).sum(), real, create_graph=True)  # (B, C, H, W)
    return grad.square().flatten(1).sum(1).mean()
