"""The Diffusion Transformer: shapes on odd sizes, zero output at init, the reference's positions, conditioning,
FLOPs against PyTorch's own counter, and a few training steps through minigen.diffusion."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minigen import diffusion as D
from minigen.kernels import _dispatch
from minigen.models.dit import CONDITIONINGS, DIT_PRESETS, DiT, DiTConfig, flops_per_forward, sincos_positions
from minigen.train import TrainConfig, Trainer

ODD = DiTConfig(in_channels=3, input_size=12, patch_size=3, dim=48, depth=2, heads=4, num_classes=5)


def moved(model: DiT) -> DiT:
    """The model with its zero-initialised layers moved off zero, so every part of it shows in the output."""
    layers = [model.final.linear] + ([model.final.adaln[-1]] if model.final.adaln is not None else [])
    layers += [b.adaln[-1] for b in model.blocks if b.adaln is not None]
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(std=0.05)
            layer.bias.normal_(std=0.05)
    return model


@pytest.mark.parametrize("config", [ODD, *DIT_PRESETS.values()], ids=["odd", *DIT_PRESETS])
def test_shapes_and_zero_prediction_at_init(config):
    model = DiT(config)
    B, c = 2, config
    x, t = torch.randn(B, c.in_channels, c.input_size, c.input_size), torch.tensor([0, 999])
    y = torch.tensor([1, c.num_classes]) if c.num_classes else None
    out = model(x, t, y)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))          # the final layer starts at zero (init_weights)
    loss = (model(x, t, y) - x).square().mean()
    loss.backward()
    assert model.final.linear.weight.grad.abs().sum() > 0   # ... and still learns


def test_positions_match_the_reference_formula():
    """DiT's get_2d_sincos_pos_embed, written out: columns in the first half, rows in the second, sin then cos."""
    dim, h, w = 16, 3, 5
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows = []
    for r in range(h):
        for col in range(w):
            def code(p):
                return torch.cat([torch.sin(p * omega), torch.cos(p * omega)])
            rows.append(torch.cat([code(float(col)), code(float(r))]))
    torch.testing.assert_close(sincos_positions(dim, h, w), torch.stack(rows).float())


def test_conditioning_time_labels_and_null_label():
    model = moved(DiT(ODD))
    x = torch.randn(3, 3, 12, 12)
    t = torch.tensor([5, 5, 5])
    a, b = model(x, t, torch.tensor([0, 0, 0])), model(x, t, torch.tensor([1, 1, 1]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, model(x, torch.tensor([500, 500, 500]), torch.tensor([0, 0, 0])))
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((3,), ODD.num_classes)))  # y None = null label
    uncond = moved(DiT(DiTConfig(input_size=4, dim=32, depth=1, heads=2, num_classes=None)))
    with pytest.raises(ValueError, match="num_classes=None"):
        uncond(torch.zeros(1, 4, 4, 4), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_positions_make_the_model_see_where_a_patch_is():
    model = moved(DiT(ODD))
    x, t = torch.randn(1, 3, 12, 12), torch.tensor([10])
    rolled = torch.roll(x, shifts=3, dims=-1)                # move every patch one place to the right
    assert not torch.allclose(torch.roll(model(x, t), 3, dims=-1), model(rolled, t), atol=1e-4)


def test_names_bad_input():
    model = DiT(ODD)
    with pytest.raises(ValueError, match=r"\(B, 3, 12, 12\), got \(2, 4, 12, 12\)"):
        model(torch.zeros(2, 4, 12, 12), torch.zeros(2))
    with pytest.raises(ValueError, match=r"timesteps of shape \(B,\) = \(2,\)"):
        model(torch.zeros(2, 3, 12, 12), torch.zeros(3))
    with pytest.raises(ValueError, match="patch_size 3 must divide input_size 8"):
        DiTConfig(input_size=8, patch_size=3)
    with pytest.raises(ValueError, match="labels must be in 0..5"):
        model(torch.zeros(1, 3, 12, 12), torch.zeros(1), torch.tensor([7]))


@pytest.mark.parametrize("name", ["DiT-T/2", "DiT-S/4", "in-context", "cross-attention"])
def test_flops_formula_against_pytorchs_counter(name, monkeypatch):
    monkeypatch.setenv("MINIGEN_KERNELS", "reference")   # attention as two matmuls, which the counter sees (it has
    # no formula for the CPU's fused SDPA kernel, so without this the attention products went uncounted)
    config = DIT_PRESETS.get(name) or DiTConfig(dim=96, depth=4, heads=3, conditioning=name)
    model = DiT(config).eval()
    x = torch.randn(1, config.in_channels, config.input_size, config.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, torch.tensor([10]), torch.tensor([3]))
    counted, ours = counter.get_total_flops(), flops_per_forward(config)
    print(f"{name}: formula {ours / 1e6:.2f} MFLOP, PyTorch's counter {counted / 1e6:.2f} MFLOP")
    assert math.isclose(ours, counted, rel_tol=0.05)        # the rest: embedders and the final adaLN vector


def test_trains_as_a_diffusion_denoiser():
    torch.manual_seed(0)
    config = DiTConfig(in_channels=2, input_size=4, patch_size=2, dim=32, depth=2, heads=2, num_classes=3)
    data = torch.randn(64, 2, 4, 4) * 0.1 + torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    labels = torch.arange(64) % 3
    model = D.Diffusion(DiT(config), D.make_schedule("cosine", 100), num_classes=3)
    trainer = Trainer(model, (data, labels), TrainConfig(steps=60, batch_size=32, lr=3e-3, log_every=10,
                                                         progress=False)).fit()
    losses = trainer.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    x = D.ddim_sample(model, model.schedule, (6, 2, 4, 4), steps=5, y=torch.arange(6) % 3, guidance=2.0,
                      null_label=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (6, 2, 4, 4) and torch.isfinite(x).all()


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_conditioning_variants_see_time_and_label(conditioning):
    """DiT's Figure 5 variants: each starts at a zero prediction and, once its weights move, reads t and y."""
    config = DiTConfig(in_channels=3, input_size=12, patch_size=3, dim=48, depth=2, heads=4, num_classes=5,
                       conditioning=conditioning)
    model = DiT(config)
    x, t = torch.randn(2, 3, 12, 12), torch.tensor([5, 5])
    assert torch.equal(model(x, t, torch.tensor([0, 1])), torch.zeros_like(x))
    moved(model)
    a = model(x, t, torch.tensor([0, 0]))
    assert a.shape == x.shape
    assert not torch.allclose(a, model(x, t, torch.tensor([1, 1])), atol=1e-5)
    assert not torch.allclose(a, model(x, torch.tensor([600, 600]), torch.tensor([0, 0])), atol=1e-5)
    with pytest.raises(ValueError, match="conditioning 'film'"):
        DiTConfig(conditioning="film")


def _backend_outputs(backends, monkeypatch):
    torch.manual_seed(3)
    model = moved(DiT(DiTConfig(in_channels=4, input_size=8, patch_size=2, dim=72, depth=2, heads=3,
                                num_classes=10)))
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 10])
    outs = {}
    for backend in backends:
        monkeypatch.setenv("MINIGEN_KERNELS", backend)
        outs[backend] = model(x, t, y).detach()
    return outs


def test_attention_backends_give_the_same_model(monkeypatch):
    """The whole DiT with attention forced to the full-matrix reference and to SDPA (the CPU default)."""
    outs = _backend_outputs(("reference", "sdpa"), monkeypatch)
    print("max |sdpa - reference|:", (outs["sdpa"] - outs["reference"]).abs().max().item())
    torch.testing.assert_close(outs["sdpa"], outs["reference"], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(_dispatch.triton is None or not _dispatch.interpreting(), reason="needs the Triton interpreter")
def test_triton_kernels_give_the_same_model_in_the_interpreter(monkeypatch):
    """Attention, LN + modulate and the gated residual on minigen's Triton kernels (interpreted on the CPU)."""
    outs = _backend_outputs(("reference", "triton"), monkeypatch)
    print("max |triton - reference|:", (outs["triton"] - outs["reference"]).abs().max().item())
    torch.testing.assert_close(outs["triton"], outs["reference"], atol=1e-4, rtol=1e-4)
