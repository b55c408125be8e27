"""Normalizing flows: every layer inverts exactly, every log-det equals the brute-force Jacobian's, ActNorm
initialises to zero mean / unit variance, and bits/dim of a known density matches the closed form."""
import math

import pytest
import torch

from minigen.models.flow import (FLOW_PRESETS, ActNorm, Coupling, Flow, FlowConfig, InvConv1x1, Split, ToyFlow,
                                 ToyFlowConfig, dequantize, gaussian_log_prob, quantize, squeeze, unsqueeze)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one thread avoids thread-pool waits that dominate on a busy 2-core CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturb(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Move every weight off its identity init (zero last convs), so the tests see a non-trivial map."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def _layers(c: int = 6):
    return {"actnorm": ActNorm(c), "invconv": InvConv1x1(c), "coupling-channel": Coupling(c, 8, "channel"),
            "coupling-checker0": Coupling(c, 8, "checkerboard", 0),
            "coupling-checker1": Coupling(c, 8, "checkerboard", 1)}


@pytest.mark.parametrize("name", list(_layers()))
def test_each_layer_inverts_on_odd_shapes(name):
    layer = _perturb(_layers()[name])
    x = torch.randn(3, 6, 5, 7)                         # odd H and W
    y, logdet = layer(x)
    assert y.shape == x.shape and logdet.shape == (3,)
    assert torch.allclose(layer.inverse(y), x, atol=1e-5)


def test_odd_channel_coupling_and_split_invert():
    x = torch.randn(2, 5, 3, 3)                         # 5 channels: halves of 2 and 3
    layer = _perturb(Coupling(5, 8, "channel"))
    assert torch.allclose(layer.inverse(layer(x)[0]), x, atol=1e-5)
    split = _perturb(Split(5, learn_prior=True))
    a, eps, _ = split(x)
    assert a.shape == (2, 2, 3, 3) and eps.shape == (2, 3, 3, 3)
    assert torch.allclose(split.inverse(a, eps), x, atol=1e-5)


def test_squeeze_round_trip_and_errors():
    x = torch.randn(2, 3, 4, 6)
    assert squeeze(x).shape == (2, 12, 2, 3)
    assert torch.equal(unsqueeze(squeeze(x)), x)
    assert torch.equal(squeeze(x)[0, :4, 0, 0], x[0, 0, :2, :2].flatten())  # a 2x2 block becomes 4 channels
    with pytest.raises(ValueError, match="even H and W"):
        squeeze(torch.randn(1, 1, 5, 4))


@pytest.mark.parametrize("config", [
    FlowConfig(image_shape=(3, 4, 12), n_scales=2, steps=2, checker_steps=1, width=8),
    FlowConfig(image_shape=(1, 12, 12), n_scales=2, steps=2, width=8, logit_alpha=0.0, learn_prior=False),
    FlowConfig(image_shape=(1, 8, 24), n_scales=3, steps=1, checker_steps=2, width=8),
])
def test_whole_flow_inverts(config):
    model = Flow(config)
    y = torch.rand(4, *config.image_shape) * 0.98 + 0.01
    model(y)                                            # data-dependent ActNorm init
    _perturb(model, 0.05)
    zs, logdet = model(y)
    assert [tuple(z.shape[1:]) for z in zs] == model.latent_shapes()
    assert sum(z[0].numel() for z in zs) == y[0].numel()  # a bijection keeps every dimension
    assert torch.allclose(model.inverse(zs), y, atol=1e-5)
    assert torch.isfinite(logdet).all()


def _brute_logdet(fn, x):
    """log|det| of the full Jacobian of fn at one example x (C, H, W), by autograd."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view(1, *x.shape))[0].flatten(), x.flatten())
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("name", list(_layers(4)))
def test_layer_logdet_matches_jacobian(name):
    layer = _perturb(_layers(4)[name].double(), 0.3)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    layer(x)                                            # ActNorm initialises itself on the first call
    _, logdet = layer(x)
    assert abs(logdet.item() - _brute_logdet(lambda v: layer(v)[0], x[0]).item()) < 1e-4


def test_whole_flow_logdet_and_log_prob_match_jacobian():
    model = Flow(FlowConfig(image_shape=(1, 4, 4), n_scales=2, steps=1, checker_steps=1, width=4)).double()
    y = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    model(y)
    _perturb(model, 0.2)

    def flat(v):                                        # all latents of one image, as one vector
        zs, _ = model(v)
        return torch.cat([z.flatten(1) for z in zs], 1), None

    _, logdet = model(y[:1])
    assert abs(logdet.item() - _brute_logdet(flat, y[0]).item()) < 1e-4
    z = flat(y[:1])[0]
    expected = gaussian_log_prob(z) + _brute_logdet(flat, y[0])
    assert torch.allclose(model.log_prob(y[:1]), expected, atol=1e-4)


def test_toy_flow_inverts_and_logdet_matches_jacobian():
    flow = _perturb(ToyFlow(ToyFlowConfig(n_layers=4, hidden=8)).double(), 0.5)
    x = torch.randn(5, 2, dtype=torch.float64)
    z, logdet, path = flow(x, return_path=True)
    assert len(path) == 5 and torch.equal(path[-1], z)
    assert torch.allclose(flow.inverse(z), x, atol=1e-10)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[0])  # (2, 2)
    assert abs(logdet[0].item() - torch.linalg.slogdet(jac)[1].item()) < 1e-8
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        flow(torch.randn(5, 3))


def test_actnorm_data_dependent_init():
    x = 3.0 + 2.5 * torch.randn(64, 5, 6, 6)
    y, _ = ActNorm(5)(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(5), atol=1e-4)


def test_actnorm_initialises_once():
    layer = ActNorm(2)
    layer(torch.randn(8, 2, 3, 3) * 4)
    bias = layer.bias.clone()
    layer(torch.randn(8, 2, 3, 3))                      # later batches do not re-initialise
    assert torch.equal(layer.bias, bias) and bool(layer.initialized)


def test_bits_per_dim_of_a_known_density():
    """Identity flow (shift pre-map, no steps learned) on Gaussian data: NLL is the closed-form Gaussian NLL."""
    model = Flow(FlowConfig(image_shape=(1, 4, 4), n_scales=1, steps=1, width=4, logit_alpha=0.0,
                            learn_prior=False))
    y = 0.5 + torch.randn(10, 1, 4, 4)                  # y - 1/2 ~ N(0, I), exactly the base density
    for m in model.modules():                           # make every layer the identity
        if isinstance(m, ActNorm):
            m.initialized.fill_(True)
        if isinstance(m, InvConv1x1):
            m.weight.data = torch.eye(4)
    zs, logdet = model(y)
    assert torch.allclose(logdet, torch.zeros(10), atol=1e-6)
    nll = -model.log_prob(y)
    closed = 0.5 * ((y - 0.5).pow(2) + math.log(2 * math.pi)).flatten(1).sum(1)
    assert torch.allclose(nll, closed, atol=1e-4)
    # and in bits/dim of 8-bit data (pixel_scale 1/256): add log2(256) = 8 bits to nats/dim / ln 2
    images = quantize(torch.rand(10, 1, 4, 4))
    bpd = model.bits_per_dim(images, torch.Generator().manual_seed(0))
    y_deq = dequantize(images, torch.Generator().manual_seed(0))
    expected = 0.5 * ((y_deq - 0.5).pow(2) + math.log(2 * math.pi)).flatten(1).mean(1) / math.log(2) + 8
    assert torch.allclose(bpd, expected, atol=1e-4)


def test_bits_per_dim_is_the_metrics_formula_bit_for_bit():
    """Flow.bits_per_dim writes the conversion out (a model file imports no metrics); it must be exactly
    minigen.metrics.bits_per_dim, since it is the training loss the notebook's numbers depend on."""
    from minigen.metrics import bits_per_dim

    model = _perturb(Flow(FlowConfig(image_shape=(1, 4, 4), n_scales=1, steps=1, width=4)))
    images = quantize(torch.rand(6, 1, 4, 4))
    y = dequantize(images, torch.Generator().manual_seed(1))
    expected = bits_per_dim(-model.log_prob(y), 16, pixel_scale=1 / 256)
    assert torch.equal(model.bits_per_dim(images, torch.Generator().manual_seed(1)), expected)


def test_presets_are_named_by_size_and_grow():
    assert list(FLOW_PRESETS) == ["Flow-S", "Flow-B", "Flow-L"]
    sizes = [sum(p.numel() for p in Flow(c).parameters()) for c in FLOW_PRESETS.values()]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_dequantize_quantize_round_trip():
    levels = torch.arange(256.0).view(1, 1, 16, 16)
    images = levels / 255 * 2 - 1                       # the course's convention for 8-bit digits
    y = dequantize(images)
    assert (y >= 0).all() and (y < 1).all()
    assert torch.equal(torch.floor(y * 256), levels)    # each level keeps its own bin of width 1/256
    assert torch.allclose(quantize(y), images, atol=1e-6)


def test_training_lowers_bits_per_dim_and_samples_have_the_right_form():
    torch.manual_seed(0)
    model = Flow(FlowConfig(image_shape=(1, 12, 12), n_scales=2, steps=1, width=8))
    images = -torch.ones(16, 1, 12, 12)                 # a black background, like digits ...
    images[:, :, 4:8, 4:8] = quantize(torch.rand(16, 1, 4, 4))  # ... with a noisy square in the middle
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = model.loss(images)["loss"].item()
    for _ in range(20):
        loss = model.loss(images)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.loss(images)["loss"].item() < first - 0.5
    x = model.sample(4, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 12, 12) and x.min() >= -1 and x.max() <= 1
    assert Flow(FLOW_PRESETS["Flow-S"]).sample(2).shape == (2, 1, 28, 28)


def test_clear_errors():
    with pytest.raises(ValueError, match="divide by 2 \\*\\* n_scales"):
        FlowConfig(image_shape=(1, 28, 28), n_scales=3)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        Flow(FLOW_PRESETS["Flow-S"])(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="mask"):
        Coupling(4, 8, "stripes")
    with pytest.raises(ValueError, match="checkerboard"):
        Coupling(1, 8, "channel")
    with pytest.raises(ValueError, match="logit_alpha"):
        FlowConfig(logit_alpha=0.6)


def test_exercise_checkers_accept_the_reference_and_reject_a_wrong_answer():
    from minigen.exercises.flow import check_affine_coupling, check_conv1x1_logdet

    def forward(x, net):
        log_s, t = net(x[:, :1]).chunk(2, dim=1)
        return torch.cat([x[:, :1], x[:, 1:] * log_s.exp() + t], dim=1), log_s.squeeze(1)

    def inverse(y, net):
        log_s, t = net(y[:, :1]).chunk(2, dim=1)
        return torch.cat([y[:, :1], (y[:, 1:] - t) * torch.exp(-log_s)], dim=1)

    check_affine_coupling(forward, inverse, strict=True)
    check_conv1x1_logdet(lambda weight, h, w: h * w * torch.linalg.slogdet(weight)[1], strict=True)
    with pytest.raises(AssertionError, match="coupling_inverse"):
        check_affine_coupling(forward, lambda y, net: y, strict=True)
    with pytest.raises(AssertionError, match="block diagonal"):
        check_conv1x1_logdet(lambda weight, h, w: torch.linalg.slogdet(weight)[1], strict=True)
