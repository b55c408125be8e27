"""Checkers for notebook 09 (video): temporal attention on the (B, T, S, H, D) layout, and a clip's velocity error.

    check_temporal_attention(my_temporal_attention_ex)   my_temporal_attention_ex(q, k, v) with q, k, v
                                                      (B, T, S, H, D) -> (B, T, S, H, D): each (b, s, h) attends
                                                      across its T frames (the notebook asks for einsum, no permute)
    check_velocity_error(my_velocity_error)           my_velocity_error(centres (N, T, 2), positions (N, T, 2))
                                                      -> float: mean distance between read and true steps

The first is compared with minigen.kernels.temporal_attention_reference on odd sizes (T = 5, S = 3) with q, k, v
that are strided views of one projection, as the video model passes them, so attending across S instead of T (or
a reshape where a permute belongs) shows. The second is checked on centres whose positions are off by a constant
(right steps, velocity error 0) and on centres with the right positions but a shuffled order.
"""
import torch

from minigen.kernels import temporal_attention_reference

from ._check import assert_close, checker, solution_for


@checker("video.temporal_attention")
def check_temporal_attention(fn) -> None:
    g = torch.Generator().manual_seed(0)
    B, T, S, H, D = 2, 5, 3, 2, 4
    qkv = torch.randn(B, T, S, 3, H, D, generator=g)                   # the video block's projection, viewed
    q, k, v = qkv.unbind(dim=3)                                         # 3 x (B, T, S, H, D), not contiguous
    assert_close("temporal attention", fn(q, k, v), temporal_attention_reference(q, k, v), atol=1e-5,
                 hint="scores[b, s, h, t, u] = sum over d of q[b, t, s, h, d] k[b, u, s, h, d] / sqrt(D) "
                      "(torch.einsum('btshd,bushd->bshtu', q, k)), softmax over u, then the weighted sum of "
                      "v[b, u, s, h, :] back to (B, T, S, H, D); attending over S instead of T is the usual slip")


@checker("video.velocity_error")
def check_velocity_error(fn) -> None:
    g = torch.Generator().manual_seed(1)
    positions = torch.randint(5, 27, (40, 6, 2), generator=g).float()     # (N, T, 2) true centres
    shifted = positions + torch.tensor([1.5, -2.0])                     # off by a constant: every step right
    got = fn(shifted, positions)
    if not isinstance(got, float):
        got = float(got) if torch.is_tensor(got) and got.numel() == 1 else got
    if not isinstance(got, float):
        raise AssertionError(f"return a float (e.g. tensor.mean().item()), got {type(got).__name__}")
    if abs(got) > 1e-5:
        raise AssertionError(f"centres that are all off by the same (1.5, -2) pixels move exactly like the truth, "
                             f"so their velocity error is 0; you returned {got:.3f}. Compare steps c[t+1] - c[t], "
                             f"not positions")
    wrong = positions[:, torch.randperm(6, generator=g)]                # the right places, in the wrong order
    want = (wrong.diff(dim=1) - positions.diff(dim=1)).norm(dim=-1).mean().item()
    got = float(fn(wrong, positions))
    if abs(got - want) > 1e-4:
        raise AssertionError(f"frames in shuffled order: expected {want:.4f}, got {got:.4f}. The error of one step "
                             f"is the length (norm over row, col) of read step minus true step; average over clips "
                             f"and the T - 1 steps")
    print(f"velocity error: correct ({want:.2f} pixels for shuffled frames, 0 for a constant offset)")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("video.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("video.temporal_attention")
def my_temporal_attention_ex(q, k, v):
    scores = torch.einsum("btshd,bushd->bshtu", q, k) / q.shape[-1] ** 0.5   # (B, S, H, T, T): frame t vs frame u
    weights = scores.softmax(dim=-1)                                       # over the frames u
    return torch.einsum("bshtu,bushd->btshd", weights, v)                  # (B, T, S, H, D), no permute


@solution_for("video.velocity_error")
def my_velocity_error(centres, positions):
    step, true_step = centres.diff(dim=1), positions.diff(dim=1)        # (N, T - 1, 2)
    return (step - true_step).norm(dim=-1).mean().item()
