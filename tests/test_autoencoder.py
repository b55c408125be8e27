"""The conv autoencoder: shapes, clear errors on bad input, learning on a tiny batch, determinism."""
from dataclasses import replace

import pytest
import torch

from minigen.data import load_mnist
from minigen.models.autoencoder import AE_PRESETS, Autoencoder, AutoencoderConfig, decode_all, encode_all, fit_gaussian

CONFIG = AutoencoderConfig(latent_dim=8, width=8, hidden=32)


def test_shapes_and_range():
    model = Autoencoder(CONFIG)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    z = model.encode(x)
    assert z.shape == (5, 8)
    out = model.decode(torch.randn(5, 8) * 50)  # huge codes still decode into [-1, 1] (tanh)
    assert out.shape == (5, 1, 28, 28) and out.abs().max() <= 1
    assert model(x).shape == x.shape
    assert model.compression() == 784 / 8


def test_presets_build_and_plane_variant():
    for name, config in AE_PRESETS.items():
        assert Autoencoder(config).encode(torch.zeros(2, 1, 28, 28)).shape == (2, config.latent_dim), name
    plane = Autoencoder(replace(AE_PRESETS["AE-S"], latent_dim=2))
    assert plane.encode(torch.zeros(3, 1, 28, 28)).shape == (3, 2)


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 3, 28, 28), (4, 1, 32, 32), (784,)])
def test_rejects_wrong_image_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        Autoencoder(CONFIG)(torch.zeros(shape))


def test_rejects_wrong_code_shape_and_dtype():
    model = Autoencoder(CONFIG)
    with pytest.raises(ValueError, match=r"codes of shape \(B, 8\)"):
        model.decode(torch.zeros(4, 16))
    with pytest.raises(TypeError, match="float"):
        model.encode(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latent_dim"):
        AutoencoderConfig(latent_dim=0)


def test_loss_decreases_on_a_tiny_batch():
    model = Autoencoder(AutoencoderConfig(latent_dim=8, width=4, hidden=32))
    digits = load_mnist("train", 8)
    x, labels = digits.images, digits.labels
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss((x, labels))["loss"].item()  # (images, labels) batches are accepted
    for _ in range(20):
        terms = model.loss(x)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    assert terms["loss"].item() < 0.6 * first
    assert torch.isfinite(terms["psnr"])


def test_deterministic_for_a_fixed_seed():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = Autoencoder(CONFIG)
        outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


def test_batched_helpers_and_gaussian_fit():
    model = Autoencoder(CONFIG)
    x = torch.rand(30, 1, 28, 28) * 2 - 1
    codes = encode_all(model, x, batch_size=7)
    assert torch.allclose(codes, model.encode(x), atol=1e-5)
    assert decode_all(model, codes, batch_size=7).shape == x.shape
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4000, 3, generator=g) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]]) + 3
    fitted = fit_gaussian(data)
    assert torch.allclose(fitted.mean.float(), data.mean(0), atol=1e-4)
    assert torch.allclose(fitted.covariance_matrix.float(), torch.cov(data.T), atol=1e-4)
    with pytest.raises(ValueError, match="N > D"):
        fit_gaussian(torch.zeros(3, 8))
