"""Patches and tubelets: exact round trips, agreement with a plain loop, and clear errors."""
import pytest
import torch

from minigen.patches import (num_tokens, patch_grid_positions, patchify, tubeletify, unpatchify,
                             untubeletify)


def patchify_loop(x, p):
    """The readable reference: visit the grid row by row, flatten each patch as (dy, dx, c)."""
    B, C, H, W = x.shape
    rows = []
    for b in range(B):
        tokens = []
        for i in range(H // p):
            for j in range(W // p):
                patch = x[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p]      # (C, p, p)
                tokens.append(patch.permute(1, 2, 0).reshape(-1))          # (p*p*C,) as (dy, dx, c)
        rows.append(torch.stack(tokens))
    return torch.stack(rows)                                               # (B, N, p*p*C)


def tubeletify_loop(v, pt, p):
    B, T, C, H, W = v.shape
    rows = []
    for b in range(B):
        tokens = []
        for s in range(T // pt):
            for i in range(H // p):
                for j in range(W // p):
                    block = v[b, s * pt:(s + 1) * pt, :, i * p:(i + 1) * p, j * p:(j + 1) * p]  # (pt, C, p, p)
                    tokens.append(block.permute(0, 2, 3, 1).reshape(-1))  # (pt*p*p*C,) as (dt, dy, dx, c)
        rows.append(torch.stack(tokens))
    return torch.stack(rows)                                               # (B, N, pt*p*p*C)


@pytest.mark.parametrize("shape,p", [((2, 3, 15, 10), 5), ((1, 1, 28, 28), 7), ((3, 2, 6, 9), 3), ((2, 5, 4, 4), 1),
                                     ((1, 3, 8, 8), 8)])
def test_patchify_matches_loop_and_round_trips(shape, p):
    x = torch.randn(shape)
    tokens = patchify(x, p)
    B, C, H, W = shape
    assert tokens.shape == (B, (H // p) * (W // p), p * p * C)
    assert torch.equal(tokens, patchify_loop(x, p))
    assert torch.equal(unpatchify(tokens, p, C, H, W), x)


@pytest.mark.parametrize("shape,pt,p", [((2, 6, 3, 10, 15), 3, 5), ((1, 5, 1, 4, 4), 5, 2), ((2, 4, 2, 6, 3), 2, 3),
                                        ((1, 3, 3, 7, 7), 1, 7)])
def test_tubeletify_matches_loop_and_round_trips(shape, pt, p):
    v = torch.randn(shape)
    tokens = tubeletify(v, pt, p)
    B, T, C, H, W = shape
    assert tokens.shape == (B, num_tokens(T, H, W, pt, p), pt * p * p * C)
    assert torch.equal(tokens, tubeletify_loop(v, pt, p))
    assert torch.equal(untubeletify(tokens, pt, p, C, T, H, W), v)


def test_tubelets_of_length_one_are_per_frame_patches():
    v = torch.randn(2, 4, 3, 8, 12)
    per_frame = torch.cat([patchify(v[:, t], 4) for t in range(4)], dim=1)  # frame-major token order
    assert torch.equal(tubeletify(v, 1, 4), per_frame)


def test_patchify_accepts_non_contiguous_input_and_keeps_dtype():
    x = torch.randn(2, 12, 8, 3).permute(0, 3, 1, 2).to(torch.float16)      # (B, C, H, W), channels-last memory
    tokens = patchify(x, 4)
    assert tokens.dtype == torch.float16
    assert torch.equal(tokens, patchify_loop(x, 4))


def test_grid_positions_follow_token_order():
    x = torch.zeros(1, 1, 6, 9)
    for i in range(2):
        for j in range(3):
            x[0, 0, i * 3:(i + 1) * 3, j * 3:(j + 1) * 3] = 10 * i + j          # each patch holds 10*row + col
    pos = patch_grid_positions(2, 3)
    assert pos.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert torch.equal(patchify(x, 3)[0, :, 0], (10 * pos[:, 0] + pos[:, 1]).float())
    assert patch_grid_positions(2, 3, 4).shape == (24, 3)
    assert patch_grid_positions(2, 3, 4)[5].tolist() == [0, 1, 1]


def test_num_tokens_counts_the_seed_lecture_video():
    # one minute at 24 fps, a 64 x 64 grid of patches per frame
    assert num_tokens(60 * 24, 64 * 16, 64 * 16, pt=1, p=16) == 5_898_240
    assert num_tokens(60 * 24, 64 * 16, 64 * 16, pt=2, p=16) == 2_949_120


@pytest.mark.parametrize("call,words", [
    (lambda: patchify(torch.zeros(1, 3, 30, 32), 4), ["image height H = 30", "patch size p = 4"]),
    (lambda: patchify(torch.zeros(1, 3, 32, 30), 4), ["image width W = 30", "patch size p = 4"]),
    (lambda: tubeletify(torch.zeros(1, 5, 3, 8, 8), 2, 4), ["number of frames T = 5", "tubelet length pt = 2"]),
    (lambda: tubeletify(torch.zeros(1, 4, 3, 8, 9), 2, 4), ["frame width W = 9", "patch size p = 4"]),
    (lambda: unpatchify(torch.zeros(1, 4, 48), 4, 3, 10, 8), ["image height H = 10"]),
    (lambda: unpatchify(torch.zeros(1, 5, 48), 4, 3, 8, 8), ["(1, 5, 48)", "expected (B, 4, 48)"]),
    (lambda: untubeletify(torch.zeros(1, 7, 96), 2, 4, 3, 4, 8, 8), ["(1, 7, 96)", "expected (B, 8, 96)"]),
    (lambda: num_tokens(7, 8, 8, pt=2, p=4), ["number of frames T = 7"]),
    (lambda: patchify(torch.zeros(1, 3, 8, 8), 0), ["patch size p must be a positive int, got 0"]),
    (lambda: patch_grid_positions(), ["give the grid's sizes"]),
])
def test_bad_sizes_raise_errors_naming_the_argument(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("call,words", [
    (lambda: patchify(torch.zeros(3, 8, 8), 4), ["x must be 4-D (B, C, H, W)", "(3, 8, 8)"]),
    (lambda: tubeletify(torch.zeros(1, 3, 8, 8), 1, 4), ["video must be 5-D (B, T, C, H, W)", "(1, 3, 8, 8)"]),
    (lambda: unpatchify(torch.zeros(4, 48), 4, 3, 8, 8), ["tokens must be 3-D"]),
])
def test_wrong_ndim_raises_naming_the_layout(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for w in words:
        assert w in str(err.value)


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        patchify([[1.0]], 1)
