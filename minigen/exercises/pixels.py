"""Checkers for notebook 00 (pixels, frames and patches).

    check_patchify(my_patchify)            your (B, C, H, W) -> (B, N, p*p*C) against minigen.patches.patchify
    check_token_count(my_token_count)      tokens of a video cut into pt x p x p tubelets
    check_attention_cost(my_attention_cost) attention pairs, full vs factorized space-time

Each runs your function on fixed cases and prints "correct", or what is wrong with a hint (never stopping the notebook);
`minigen.exercises.solution("<topic>.<name>")` prints a solution.
"""
import torch

from ..patches import num_tokens, patchify
from ._check import assert_close, checker, solution_for

PATCHIFY_CASES = ((2, 3, 12, 8, 4), (1, 1, 28, 28, 7), (3, 2, 6, 9, 3))  # (B, C, H, W, p): non-square, odd p
VIDEO_CASES = (  # (seconds, fps, height, width, p, pt)
    (60, 24, 1024, 1024, 16, 1),   # the seed lecture's minute of video
    (4, 8, 32, 32, 4, 2),          # a course-sized clip
    (10, 30, 720, 1280, 16, 2),    # 720p, ten seconds
)
ATTENTION_CASES = ((1440, 4096), (16, 64), (1, 49), (8, 1))  # (T frames, S patches per frame)


@checker("pixels.patchify")
def check_patchify(fn) -> None:
    """fn(x, p) must cut (B, C, H, W) images into (B, N, p*p*C) tokens exactly like minigen's patchify:
    tokens row-major over the patch grid, each token's values ordered (dy, dx, c)."""
    g = torch.Generator().manual_seed(0)
    for B, C, H, W, p in PATCHIFY_CASES:
        x = torch.randn(B, C, H, W, generator=g)
        assert_close(f"patchify of {(B, C, H, W)} with p={p}", fn(x, p), patchify(x, p), atol=0, rtol=0,
                     hint="reshape to (B, C, H/p, p, W/p, p), permute to (B, H/p, W/p, p, p, C), then flatten; "
                          "channels must vary fastest inside a token")


def _expect_equal(name: str, got, expected, hint: str) -> None:
    if got != expected:
        raise AssertionError(f"{name}: got {got!r}, expected {expected!r}. {hint}")


@checker("pixels.token_count")
def check_token_count(fn) -> None:
    """fn(seconds, fps, height, width, p, pt) must return the number of tubelet tokens of the video."""
    for seconds, fps, height, width, p, pt in VIDEO_CASES:
        expected = num_tokens(seconds * fps, height, width, pt, p)
        got = fn(seconds, fps, height, width, p, pt)
        _expect_equal(f"tokens of {seconds} s at {fps} fps, {height}x{width}, p={p}, pt={pt}", got, expected,
                      hint="frames = seconds * fps; tokens = (frames / pt) * (height / p) * (width / p)")
    print("token count: correct")


@checker("pixels.attention_cost")
def check_attention_cost(fn) -> None:
    """fn(T, S) must return (full, factorized): the query-key pairs of full attention over T*S tokens, and
    of factorized attention (every frame attends over its S patches, then every patch over its T frames)."""
    for T, S in ATTENTION_CASES:
        expected = ((T * S) ** 2, T * S ** 2 + S * T ** 2)
        got = fn(T, S)
        _expect_equal(f"attention pairs for T={T}, S={S}", tuple(got), expected,
                      hint="full: (T*S)**2; spatial attention costs T * S**2, temporal attention S * T**2")
    print("attention cost: correct")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("pixels.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("pixels.patchify")
def my_patchify(x, p):
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p)      # (B, C, h, dy, w, dx)
    x = x.permute(0, 2, 4, 3, 5, 1)                # (B, h, w, dy, dx, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


@solution_for("pixels.token_count")
def my_token_count(seconds, fps, height, width, p, pt):
    return (seconds * fps // pt) * (height // p) * (width // p)


@solution_for("pixels.attention_cost")
def my_attention_cost(T, S):
    return (T * S) ** 2, T * S ** 2 + S * T ** 2
