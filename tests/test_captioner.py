"""The tiny captioner (minigen.models.captioner): teacher-forcing targets, greedy and beam decoding in the
tokenizer's format, learning to caption a small set exactly, clear errors."""
import pytest
import torch

from minigen.data import SCENE_VOCAB, detokenize_scenes, make_scenes, tokenize_scenes
from minigen.models.captioner import CAPTIONER_PRESETS, Captioner, CaptionerConfig

TINY = CAPTIONER_PRESETS["Cap-T"]


def test_targets_end_with_eos_and_skip_padding(monkeypatch):
    torch.manual_seed(0)
    model = Captioner(TINY)
    tokens = tokenize_scenes(["a red circle", "a small blue cross in the center"], length=10)
    seen = {}
    real = torch.nn.functional.cross_entropy

    def spy(logits, targets, **kw):
        seen["targets"] = targets.view(2, -1)
        return real(logits, targets, **kw)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    out = model.loss((make_scenes(2).images, tokens))
    t = seen["targets"]
    assert t.shape == (2, 11)
    assert t[0, :4].tolist() == tokens[0, :3].tolist() + [TINY.eos] and (t[0, 4:] == -100).all()
    assert t[1, :8].tolist() == tokens[1, :7].tolist() + [TINY.eos] and (t[1, 8:] == -100).all()
    assert out["loss"].item() == pytest.approx(torch.log(torch.tensor(float(TINY.vocab_size))).item(), rel=1e-4)


def test_generate_returns_tokenizer_ids_and_beam_is_at_least_as_likely():
    torch.manual_seed(0)
    model = Captioner(TINY).eval()
    images = make_scenes(5, seed=1).images
    greedy, beam = model.generate(images), model.generate(images, beam=4)
    for ids in (greedy, beam):
        assert ids.shape == (5, TINY.context) and ids.dtype == torch.long
        assert ids.min() >= 0 and ids.max() < len(SCENE_VOCAB)
        words = ids != 0                                     # padding only after the last word
        assert (words.cummin(dim=1).values == words).all()
    with pytest.raises(ValueError, match="beam must be an integer >= 1"):
        model.generate(images, beam=0)


def _logprob(model, images, ids):
    """Summed log-probability of the captions ids (then EOS) under the model."""
    out = []
    for i in range(len(images)):
        n = int((ids[i] != 0).sum())
        inputs = torch.cat([torch.tensor([model.config.bos]), ids[i, :n]])[None]
        target = torch.cat([ids[i, :n], torch.tensor([model.config.eos])])
        logp = model.decode(model.encoder(images[i:i + 1]), inputs)[0].log_softmax(-1)
        out.append(logp[torch.arange(n + 1), target].sum())
    return torch.stack(out)


def test_learns_a_small_set_exactly_and_beam_never_loses_to_greedy():
    scenes = make_scenes(16, seed=2)
    tokens = tokenize_scenes(scenes.captions)
    torch.manual_seed(0)
    model = Captioner(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = model.loss((scenes.images, tokens))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()
    greedy = model.generate(scenes.images)
    assert sum(a == b for a, b in zip(detokenize_scenes(greedy), scenes.captions)) >= 14, out["loss"].item()
    beam = model.generate(scenes.images, beam=3)
    with torch.no_grad():
        assert (_logprob(model, scenes.images, beam) >= _logprob(model, scenes.images, greedy) - 1e-4).all()


def test_clear_errors():
    model = Captioner(TINY)
    images = make_scenes(2).images
    with pytest.raises(ValueError, match="token ids must lie in 0..21"):
        model.loss((images, torch.full((2, 4), 30)))
    with pytest.raises(ValueError, match="int64"):
        model.loss((images, torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="images of shape"):
        model.generate(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="not divisible"):
        CaptionerConfig(dim=65)
