"""The tiny CLIP (minigen.models.clip) and the CLIP score (minigen.metrics.clip_score)."""
import math

import pytest
import torch

from minigen import metrics
from minigen.data import SCENE_VOCAB, make_scenes, tokenize_scenes
from minigen.models.clip import CLIP, CLIP_PRESETS, CLIPConfig, contrastive_loss

TINY = CLIP_PRESETS["CLIP-T"]


def test_contrastive_loss_matches_a_hand_computation_on_2x2():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    out = contrastive_loss(image, text, logit_scale=math.log(2.0))          # logits = 2 * cosines
    logits = [[1.6, 0.0], [1.92, 1.6]]                                       # by hand: 2 * (0.8, 0; 0.48 + 0.48, 0.8)
    assert torch.allclose(out["logits"], torch.tensor(logits))

    def ce(row, i):
        return -(row[i] - math.log(sum(math.exp(v) for v in row)))
    rows = ce(logits[0], 0) + ce(logits[1], 1)
    cols = ce([logits[0][0], logits[1][0]], 0) + ce([logits[0][1], logits[1][1]], 1)
    assert out["loss"].item() == pytest.approx((rows / 2 + cols / 2) / 2, rel=1e-6)
    assert out["accuracy"].item() == 0.5         # image 1 prefers text 0 (1.92 > 1.6), and text 0 prefers image 1
    with pytest.raises(ValueError, match="two \\(B, E\\) embeddings"):
        contrastive_loss(image, text[:1], 0.0)


def test_clip_score_is_2_5_for_identical_and_0_for_orthogonal_or_opposite():
    e = torch.randn(5, 16)
    assert torch.allclose(metrics.clip_score(e, 3 * e), torch.full((5,), 2.5))
    basis = torch.eye(4)
    assert torch.equal(metrics.clip_score(basis, basis.roll(1, dims=0)), torch.zeros(4))
    assert torch.equal(metrics.clip_score(basis, -basis), torch.zeros(4))
    with pytest.raises(ValueError, match="clip_score expects two"):
        metrics.clip_score(e, e[:, :8])


def test_shapes_unit_embeddings_and_padding_does_not_matter():
    torch.manual_seed(0)
    model = CLIP(TINY).eval()
    scenes = make_scenes(6, seed=1)
    tokens = tokenize_scenes(scenes.captions)
    img, txt = model.encode_image(scenes.images), model.encode_text(tokens)
    assert img.shape == txt.shape == (6, TINY.embed_dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(6)) and torch.allclose(txt.norm(dim=-1), torch.ones(6))
    longest = max(len(c.split()) for c in scenes.captions)
    assert torch.allclose(model.encode_text(tokens[:, :longest]), txt, atol=1e-6)   # padding is masked out
    assert model.similarity(scenes.images, tokens[:4]).shape == (6, 4)
    assert TINY.vocab_size == len(SCENE_VOCAB) and CLIPConfig().vocab_size == len(SCENE_VOCAB)


def test_clear_errors_on_bad_input():
    model = CLIP(TINY)
    with pytest.raises(ValueError, match="images of shape \\(B, 3, 32, 32\\)"):
        model.encode_image(torch.zeros(2, 1, 28, 28))
    with pytest.raises(TypeError, match="float images"):
        model.encode_image(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="int64"):
        model.encode_text(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="token ids must lie in 0..21"):
        model.encode_text(torch.full((1, 4), 40))
    with pytest.raises(ValueError, match="all padding"):
        model.encode_text(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="patch_size 5 must divide"):
        CLIPConfig(patch_size=5)


def test_learns_to_match_a_batch_and_is_deterministic():
    scenes = make_scenes(32, seed=2)
    batch = (scenes.images, tokenize_scenes(scenes.captions))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = CLIP(TINY)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        history = []
        for _ in range(40):
            out = model.loss(batch)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            history.append(out["loss"].item())
        runs.append(history)
    assert runs[0] == runs[1]
    assert runs[0][-1] < 0.5 * runs[0][0], runs[0][::10]
    assert out["accuracy"].item() > 0.5 and 0 < out["temperature"].item() <= 0.07 + 1e-3
