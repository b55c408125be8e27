"""Checkers for notebook 10 (images and words): CLIP's symmetric contrastive loss, and the CLIP score.

    check_contrastive_loss(my_contrastive_loss)   my_contrastive_loss(image_emb (B, E), text_emb (B, E),
                                                                      temperature float) -> a scalar tensor
    check_clip_score(my_clip_score)               my_clip_score(image_emb (N, E), text_emb (N, E)) -> (N,)

Both are compared with minigen on fixed inputs chosen so the usual slips show: a batch whose image->text and
text->image losses differ (a one-sided loss is caught), embeddings that are not unit vectors (a missing
normalization is caught) and pairs pointing apart (a missing max(cos, 0) is caught).
"""
import math

import torch
import torch.nn.functional as F

from minigen.metrics import clip_score
from minigen.models.clip import contrastive_loss

from ._check import assert_close, checker, solution_for


@checker("clip.contrastive_loss")
def check_contrastive_loss(fn) -> None:
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(5, 8, generator=g), dim=-1)                 # (B, E), B != E
    text = F.normalize(image + 0.8 * torch.randn(5, 8, generator=g), dim=-1)    # noisy partners: rows != columns
    for temperature in (1.0, 0.07):
        expected = contrastive_loss(image, text, math.log(1 / temperature))["loss"]
        assert_close(f"contrastive loss at temperature {temperature}", fn(image, text, temperature), expected,
                     atol=1e-4, hint="logits = image_emb @ text_emb.T / temperature, (B, B); the right answer of row "
                                     "i is column i; average the cross-entropy of the rows (each image picks its "
                                     "text) and of the columns (logits.T: each text picks its image)")


@checker("clip.clip_score")
def check_clip_score(fn) -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(6, 8, generator=g) * 3                                  # not unit vectors
    text = torch.randn(6, 8, generator=g) * 0.5
    text[0] = -image[0]                                                         # a pair pointing apart
    assert_close("CLIP score", fn(image, text), clip_score(image, text), atol=1e-5,
                 hint="2.5 * max(cos(image, text), 0) for each row: normalize both rows first (cosine, not the dot "
                      "product), and clamp negative cosines at 0")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("clip.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("clip.contrastive_loss")
def my_contrastive_loss(image_emb, text_emb, temperature):
    logits = image_emb @ text_emb.T / temperature                             # (B, B): the pairs on the diagonal
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@solution_for("clip.clip_score")
def my_clip_score(image_emb, text_emb):
    cos = F.normalize(image_emb, dim=-1).mul(F.normalize(text_emb, dim=-1)).sum(-1)   # (N,)
    return 2.5 * cos.clamp(min=0)
