"""Checkers for notebook 07 (kernels: flash attention and fused norms).

    check_merge_partials(my_merge_partials)      merge two key blocks' online-softmax states (split-K attention)
    check_modulate_traffic(my_modulate_traffic)  bytes moved by adaLN's LN * (1 + scale) + shift, eager vs fused
    check_stride_align(my_stride_align)          what the compiler may assume about a tensor's strides

Each runs your function on fixed cases and prints "correct", or what is wrong with a hint (never stopping the notebook);
`minigen.exercises.solution("<topic>.<name>")` prints a solution.
"""
import torch

from ._check import assert_close, checker, solution_for


def _partial(q, k, v, scale):
    """Attention of q over one block of keys as online-softmax state (m, l, acc): the row max of the scores, the
    sum of exp(score - m), and the un-normalised sum of exp(score - m) * v."""
    s = q @ k.T * scale  # (N, D) @ (D, M) -> (N, M)
    m = s.max(dim=-1).values  # (N,)
    p = torch.exp(s - m[:, None])  # (N, M)
    return m, p.sum(dim=-1), p @ v  # (N,), (N,), (N, D)


@checker("kernels.merge_partials")
def check_merge_partials(fn) -> None:
    """fn(m_a, l_a, acc_a, m_b, l_b, acc_b) -> (m, l, acc): the state of both key blocks together, so that acc / l
    is attention over all keys. One block's scores are far larger than the other's, so forgetting to rescale
    to the common max shows."""
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(5, 8, generator=g), torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    k[7:] += 3.0 * q.mean(0)  # (the second block's keys align with the queries: larger scores)
    scale = 8 ** -0.5
    got = fn(*_partial(q, k[:7], v[:7], scale), *_partial(q, k[7:], v[7:], scale))
    if not (isinstance(got, tuple) and len(got) == 3):
        raise AssertionError("return the triple (m, l, acc)")
    want = _partial(q, k, v, scale)
    assert_close("m", got[0], want[0], hint="m is the larger of the two running maxima, per row")
    assert_close("l", got[1], want[1], hint="rescale each block's sum by exp(m_block - m) before adding")
    assert_close("acc", got[2], want[2], hint="rescale each block's acc like its l, row by row, then add")
    assert_close("acc / l (attention over all keys)", got[2] / got[1][:, None],
                 torch.softmax(q @ k.T * scale, dim=-1) @ v)


@checker("kernels.modulate_traffic")
def check_modulate_traffic(fn) -> None:
    """fn(B, N, C, bytes_per) -> (eager, fused): bytes of HBM traffic for y = LN(x) * (1 + scale) + shift on x of
    shape (B, N, C), counting full-size tensors only (the (B, C) vectors are tiny). Eager PyTorch runs layer_norm,
    a multiply and an add, each reading its input and writing its output; the fused kernel reads x and writes y."""
    for B, N, C, bytes_per in ((32, 256, 1152, 2), (64, 196, 384, 4), (1, 1, 1, 2)):
        got = fn(B, N, C, bytes_per)
        want = (6 * B * N * C * bytes_per, 2 * B * N * C * bytes_per)
        if tuple(got) != want:
            raise AssertionError(f"B={B} N={N} C={C} bytes_per={bytes_per}: got {tuple(got)}, expected {want}. Each "
                                 f"of the three eager ops reads one full tensor and writes one")
    print("modulate traffic: correct")


@checker("kernels.stride_align")
def check_stride_align(fn) -> None:
    """fn(shape, strides) -> int: for a (B, H, N, D) tensor, the largest power of two up to 16 that divides the batch,
    head and row strides, ignoring a dimension of size 1 (its stride never reaches an address). Checked against
    minigen's own `_stride_align` on DiT-like layouts: contiguous, packed q/k/v, odd sequence lengths, a size-1
    batch with a stride that divides nothing."""
    from minigen.kernels import flash_attention

    B, N, H = 2, 97, 16
    cases = [((B, H, N, 64), (H * N * 64, N * 64, 64, 1)),  # contiguous, d = 64
             ((B, H, N, 72), (H * N * 72, N * 72, 72, 1)),  # contiguous, DiT-XL's d = 72
             ((B, H, N, 72), (N * 3 * H * 72, 72, 3 * H * 72, 1)),  # q cut from a packed (B, N, 3, H, D) tensor
             ((B, 4, 5, 20), (400, 100, 20, 1)),  # d = 20
             ((1, H, N, 72), (12345, N * 72, 72, 1)),  # batch of one: its stride does not count
             ((B, H, N, 36), (H * N * 36, N * 36, 36, 1))]  # an odd number of bf16 pairs per row
    for shape, strides in cases:
        want = flash_attention._stride_align(torch.empty_strided(shape, strides, device="meta"))
        got = fn(shape, strides)
        if got != want:
            raise AssertionError(f"shape {shape}, strides {strides}: got {got}, expected {want}. Start from 16 and "
                                 "halve while some counted stride is not a multiple; skip size-1 dimensions and "
                                 "the head-dim stride")
    print("stride alignment: correct")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("kernels.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("kernels.merge_partials")
def my_merge_partials(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m = torch.maximum(m_a, m_b)                      # the common max, per row
    wa, wb = torch.exp(m_a - m), torch.exp(m_b - m)  # how much each block's terms were overstated
    return m, l_a * wa + l_b * wb, acc_a * wa[:, None] + acc_b * wb[:, None]


@solution_for("kernels.modulate_traffic")
def my_modulate_traffic(B, N, C, bytes_per):
    full = B * N * C * bytes_per  # one full-size tensor
    return 3 * 2 * full, 2 * full


@solution_for("kernels.stride_align")
def my_stride_align(shape, strides):
    align = 16
    for size, stride in zip(shape[:3], strides[:3]):  # batch, head, row
        if size == 1:
            continue  # never reaches an address
        while stride % align:
            align //= 2
    return align
