"""Checkers for notebook 08 (latent arithmetic): an attribute vector, and spherical interpolation.

    check_attribute_vector(my_attribute_vector)   my_attribute_vector(z (N, D), present (N,) 0/1) -> (D,)
    check_slerp(my_slerp)                         my_slerp(a (D,), b (D,), t float) -> (D,)

Both are compared with minigen.edits on fixed inputs: unequal group sizes (so a mean over all latents is caught),
and for slerp points at an angle where renormalising a straight line gives the right length but the wrong place.
"""
import torch

from minigen.edits import attribute_vector, slerp

from ._check import assert_close, checker, solution_for


@checker("edits.attribute_vector")
def check_attribute_vector(fn) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g)
    present = torch.tensor([1, 0, 0, 1, 0, 0, 0])               # 2 with, 5 without: unequal groups
    assert_close("attribute vector", fn(z, present), attribute_vector(z, present),
                 hint="the mean latent of the rows with the attribute minus the mean latent of the rows without it "
                      "(z[present == 1].mean(0) - z[present == 0].mean(0)); not minus the mean of all rows")


@checker("edits.slerp")
def check_slerp(fn) -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g) * 2.0   # different lengths
    assert_close("slerp at t = 0", fn(a, b, 0.0), a, atol=1e-5, hint="slerp(a, b, 0) must be a")
    assert_close("slerp at t = 1", fn(a, b, 1.0), b, atol=1e-4, hint="slerp(a, b, 1) must be b")
    for t in (0.25, 0.5, 0.8):
        assert_close(f"slerp at t = {t}", fn(a, b, t), slerp(a, b, t), atol=1e-4,
                     hint="theta = arccos(<a, b> / (|a| |b|)); return sin((1 - t) theta) / sin(theta) * a + "
                          "sin(t theta) / sin(theta) * b. A straight line rescaled to the sphere has the right "
                          "length but moves unevenly along the arc")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("edits.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("edits.attribute_vector")
def my_attribute_vector(z, present):
    present = present.bool()
    return z[present].mean(0) - z[~present].mean(0)


@solution_for("edits.slerp")
def my_slerp(a, b, t):
    theta = torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1))    # the angle between a and b
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
