"""The caption DiT of notebook 11 (minigen.models.dit with text_dim): a CLIP text tower read by cross-attention,
the null caption, caption dropout, guidance with captions against separate calls, a frozen or trained text
encoder, the FLOPs formula, clear errors."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import minigen.diffusion as D
from minigen.data import make_scenes, tokenize_scenes
from minigen.models.clip import CLIP, CLIP_PRESETS
from minigen.models.dit import TEXT_DIT_PRESETS, DiT, DiTConfig, flops_per_forward

CONFIG = TEXT_DIT_PRESETS["DiT-Text-T/4"]


def build(config=CONFIG, seed=0, moved=True):
    # a caption DiT on CLIP-T's text tower; `moved`: every weight nudged, so its output depends on x, t and y
    # (at init the output layer is zero and every prediction is 0)
    torch.manual_seed(seed)
    model = DiT(config, text_encoder=CLIP(CLIP_PRESETS["CLIP-T"]).text)
    if moved:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def batch(n=4, seed=0):
    scenes = make_scenes(n, seed=seed)
    return scenes.images, torch.full((n,), 500.0), tokenize_scenes(scenes.captions)


def test_shapes_zero_at_init_and_reads_the_caption():
    x, t, y = batch()
    fresh = build(moved=False)
    out = fresh(x, t, y)
    assert out.shape == x.shape and (out == 0).all()       # adaLN-Zero: the untrained model predicts 0
    model = build()
    other = tokenize_scenes(make_scenes(4, seed=9).captions)
    assert not torch.allclose(model(x, t, y), model(x, t, other))   # a different caption, a different prediction


def test_the_null_caption_is_y_none_and_never_reaches_the_encoder(monkeypatch):
    model = build()
    x, t, y = batch()
    y = y.clone()
    y[1] = 0                                                          # row 1: the null caption
    seen = []
    states = model.text.states
    monkeypatch.setattr(model.text, "states", lambda tokens: seen.append(len(tokens)) or states(tokens))
    with torch.no_grad():
        out = model(x, t, y)
        alone = model(x[1:2], t[1:2], None)
    assert seen[0] == 3                                               # only the three real captions were read
    torch.testing.assert_close(out[1:2], alone)
    assert torch.isfinite(out).all()


def test_guidance_with_captions_against_separate_calls():
    model = build()
    x, t, y = batch()
    null = torch.zeros_like(y)
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, null)
        for scale in (0.0, 1.0, 2.5):
            guided = D.guided_eps(model, x, t, y, scale, null_label=0)
            torch.testing.assert_close(guided, uncond + scale * (cond - uncond), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(D.guided_eps(model, x, t, y, 0.0, null_label=0), uncond, rtol=1e-5, atol=1e-5)


def test_caption_dropout_drops_whole_rows_at_the_rate():
    tokens = tokenize_scenes(make_scenes(4000, seed=5).captions)
    dropped = D.drop_captions(tokens, 0.3, generator=torch.Generator().manual_seed(0))
    gone = (dropped == 0).all(dim=1)
    assert abs(gone.float().mean().item() - 0.3) < 0.025              # binomial sd 0.007
    assert torch.equal(dropped[~gone], tokens[~gone])                 # the rest untouched
    assert D.drop_captions(tokens, 0.0) is tokens
    assert (D.drop_captions(tokens, 1.0) == 0).all()
    with pytest.raises(ValueError, match="probability"):
        D.drop_captions(tokens, 1.5)
    with pytest.raises(ValueError, match="token ids"):
        D.drop_captions(tokens[0], 0.1)


@pytest.mark.parametrize("train_text", [False, True])
def test_the_text_encoder_is_frozen_unless_asked(train_text):
    model = build(DiTConfig(**{**CONFIG.__dict__, "train_text": train_text}))   # moved: at init only the
    # zero output layer gets a gradient
    fm = D.FlowMatching(model, captions=True, p_uncond=0.2)
    x, _, y = batch(8)
    fm.loss((x, y))["loss"].backward()
    text_grads = [p.grad for p in model.text.parameters()]
    assert all(p.requires_grad == train_text for p in model.text.parameters())
    if train_text:
        assert any(g is not None and g.abs().sum() > 0 for g in text_grads)
    else:
        assert all(g is None for g in text_grads)
    assert model.final.linear.weight.grad is not None and model.final.linear.weight.grad.abs().sum() > 0


def test_flow_matching_trains_on_captions():
    torch.manual_seed(0)
    model = build(moved=False).train()
    fm = D.FlowMatching(model, captions=True, p_uncond=0.1)
    assert fm.null_label == 0
    x, _, y = batch(16)
    opt = torch.optim.AdamW([p for p in fm.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(30):
        loss = fm.loss((x, y))["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    out = D.fm_sample(fm, (4, 3, 32, 32), steps=3, y=y[:4], guidance=2.0, null_label=fm.null_label,
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32) and torch.isfinite(out).all()


def test_flops_formula_against_pytorchs_counter(monkeypatch):
    monkeypatch.setenv("MINIGEN_KERNELS", "reference")   # attention as two matmuls, which the counter sees (it has
    model = build(moved=False)                           # no formula for the CPU's fused SDPA kernel)
    x, t, y = batch(1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        context = model.text_context(y)[0]
    text_flops = counter.get_total_flops()                            # the encoder's own, not in the formula
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, y)
    counted = counter.get_total_flops() - text_flops
    ours = flops_per_forward(CONFIG, context=context.shape[1] - 1)
    assert math.isclose(ours, counted, rel_tol=0.05), (ours, counted)


def test_clear_errors():
    text = CLIP(CLIP_PRESETS["CLIP-T"]).text
    with pytest.raises(ValueError, match="text encoder goes with text_dim"):
        DiT(CONFIG)
    with pytest.raises(ValueError, match="text encoder goes with text_dim"):
        DiT(DiTConfig(), text_encoder=text)
    with pytest.raises(ValueError, match="states"):
        DiT(CONFIG, text_encoder=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="num_classes=None"):
        DiTConfig(text_dim=64)
    with pytest.raises(ValueError, match="leave num_classes None"):
        D.FlowMatchingConfig(captions=True, num_classes=10)
    model = build()
    x, t, y = batch(2)
    with pytest.raises(ValueError, match=r"\(B, L\) int64 token ids"):
        model(x, t, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="3 captions for 2 images"):
        model(x, t, tokenize_scenes(["a red circle"] * 3))
    with pytest.raises(ValueError, match="unknown word"):
        tokenize_scenes(["a purple circle"])


def test_the_t2i_recipe_builds_around_a_text_encoder():
    from minigen.recipes import recipe
    r = recipe("t2i", "ci")
    text = CLIP(CLIP_PRESETS["CLIP-T"]).text
    model = r.build(text_encoder=text)
    assert isinstance(model, D.FlowMatching) and model.config.captions and model.null_label == 0
    assert model.model.text is text and model.model.config == TEXT_DIT_PRESETS[r.preset]
    with pytest.raises(ValueError, match="pass text_encoder="):
        r.build()
