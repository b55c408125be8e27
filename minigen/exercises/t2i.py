"""Checkers for notebook 11 (text to image): caption dropout, and the guided velocity of classifier-free guidance.

    check_caption_dropout(my_drop_captions)     my_drop_captions(tokens (B, L) int64, p float, generator)
                                                -> (B, L): each whole row replaced by the null caption (all 0)
                                                with probability p, the other rows unchanged
    check_guided_velocity(my_guided_velocity)   my_guided_velocity(model, x (B, C, H, W), t (B,), tokens (B, L),
                                                scale float) -> (B, C, H, W)

The first is measured on 20,000 rows, so a rate that is right only for one p (or dropping single words instead of
captions) shows; the second is compared with minigen.diffusion.guided_eps on a small network that reads the
words, at scales 0, 1 and 3, so a swapped or half-written combination shows.
"""
import torch
from torch import nn

from minigen.diffusion import guided_eps

from ._check import assert_close, checker, solution_for


@checker("t2i.caption_dropout")
def check_caption_dropout(fn) -> None:
    tokens = torch.randint(1, 22, (20000, 6), generator=torch.Generator().manual_seed(0))    # (B, L), no padding
    tokens[::2, 4:] = 0                                                                       # some short captions
    for p in (0.1, 0.5):
        kept = tokens.clone()
        out = fn(tokens, p, torch.Generator().manual_seed(1))
        if not torch.equal(tokens, kept):
            raise AssertionError("your function changed the tokens it was given: return a new tensor "
                                 "(masked_fill, not masked_fill_)")
        if not torch.is_tensor(out) or out.shape != tokens.shape:
            raise AssertionError(f"expected a tensor of shape {tuple(tokens.shape)}, got "
                                 f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
        dropped = (out == 0).all(dim=1)                                                       # (B,) null captions
        same = (out == tokens).all(dim=1)
        if not (dropped | same).all():
            raise AssertionError("some rows are neither the caption nor the null caption: drop whole captions "
                                 "(one draw per row, every word set to 0), not single words")
        rate = dropped.float().mean().item()
        if abs(rate - p) > 0.02:
            raise AssertionError(f"at p = {p} you dropped {rate:.3f} of the captions: a row is dropped when its "
                                 f"uniform draw is < p")
    print(f"caption dropout: correct (p = 0.5 dropped {rate:.3f} of 20,000 captions)")


class _WordReader(nn.Module):
    # a tiny caption "network": its output depends on x, t and which words the caption holds
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.embed = nn.Parameter(torch.randn(22, 3, generator=g))

    def forward(self, x, t, y=None):
        words = self.embed[y].sum(1)                                                          # (B, 3); padding: row 0
        return 0.5 * x + t.view(-1, 1, 1, 1) * words[:, :, None, None]


@checker("t2i.guided_velocity")
def check_guided_velocity(fn) -> None:
    model = _WordReader()
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(4, 3, 5, 5, generator=g), torch.rand(4, generator=g)
    tokens = torch.randint(1, 22, (4, 6), generator=g)
    with torch.no_grad():
        for scale in (0.0, 1.0, 3.0):
            assert_close(f"guided velocity at scale {scale:g}", fn(model, x, t, tokens, scale),
                         guided_eps(model, x, t, tokens, scale=scale, null_label=0), atol=1e-5,
                         hint="v_null = model(x, t, null caption: zeros like tokens), v_cond = model(x, t, tokens); "
                              "return v_null + scale * (v_cond - v_null): scale 0 is the unconditional model, "
                              "1 the conditional one")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("t2i.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("t2i.caption_dropout")
def my_drop_captions(tokens, p, generator=None):
    drop = torch.rand(tokens.shape[0], generator=generator) < p            # (B,): one draw per caption
    return tokens.masked_fill(drop[:, None], 0)                            # a dropped row becomes all padding


@solution_for("t2i.guided_velocity")
def my_guided_velocity(model, x, t, tokens, scale):
    v_cond = model(x, t, tokens)
    v_null = model(x, t, torch.zeros_like(tokens))                         # the null caption: every word padding
    return v_null + scale * (v_cond - v_null)
