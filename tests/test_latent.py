"""The KL autoencoder of latent diffusion (notebook 06): shapes, padding and cropping, the scale factor, the loss
terms, a short training run that reconstructs, a checkpoint round trip, and errors that name the problem."""
import pytest
import torch

from minigen.models.latent import (KLAE_PRESETS, KLAutoencoder, KLAutoencoderConfig, decode_latents,
                                   encode_latents)
from minigen.train import TrainConfig, Trainer, read_checkpoint


@pytest.mark.parametrize("name", list(KLAE_PRESETS))
def test_shapes_of_each_preset(name):
    model = KLAutoencoder(KLAE_PRESETS[name])
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    mean, logvar = model.moments(x)
    assert mean.shape == logvar.shape == (3, 4, 8, 8)
    assert model.encode_latent(x).shape == (3, 4, 8, 8)
    out = model(x)
    assert out.shape == x.shape and out.abs().max() <= 1
    terms = model.loss(x)
    assert set(terms) == {"loss", "mse", "kl", "psnr"}
    torch.testing.assert_close(terms["loss"], terms["mse"] + model.config.kl_weight * terms["kl"])


def test_kl_term_is_the_gaussian_kl_per_latent_number():
    model = KLAutoencoder(KLAE_PRESETS["KLAE-S"])
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    mean, logvar = model.moments(x)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean()
    torch.testing.assert_close(model.loss(x)["kl"], expected, atol=1e-6, rtol=1e-5)


def test_scale_factor_gives_unit_variance_and_decode_inverts_it():
    model = KLAutoencoder(KLAE_PRESETS["KLAE-S"])
    x = torch.rand(200, 1, 28, 28) * 2 - 1
    scale = model.fit_scale(x)
    z = encode_latents(model, x)
    assert abs(z.std().item() - 1.0) < 1e-4 and scale == pytest.approx(model.scale.item())
    torch.testing.assert_close(decode_latents(model, z), model(x).detach(), atol=1e-5, rtol=1e-5)
    assert "scale" in model.state_dict()                 # a buffer: a checkpoint carries the scale


def test_a_short_run_learns_to_reconstruct_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    blobs = torch.zeros(256, 1, 28, 28) - 1                         # white squares at random places
    for i, (r, c) in enumerate(torch.randint(2, 20, (256, 2), generator=g).tolist()):
        blobs[i, :, r:r + 6, c:c + 6] = 1
    model = KLAutoencoder(KLAE_PRESETS["KLAE-S"])
    first = model.loss(blobs[:64])["mse"].item()
    trainer = Trainer(model, blobs, TrainConfig(steps=150, batch_size=32, lr=3e-3, progress=False)).fit()
    last = (model(blobs) - blobs).square().mean().item()
    print(f"reconstruction MSE: {first:.3f} at init -> {last:.3f} after 150 steps")
    assert last < 0.3 * first
    model.fit_scale(blobs)
    path = trainer.save(tmp_path / "ae.pt")
    fresh = KLAutoencoder(KLAE_PRESETS["KLAE-S"])
    fresh.load_state_dict(read_checkpoint(path, fresh)["model"])
    assert fresh.scale.item() == model.scale.item()


def test_names_bad_input():
    model = KLAutoencoder(KLAE_PRESETS["KLAE-S"])
    with pytest.raises(ValueError, match=r"latents of shape \(B, 4, 8, 8\), got \(2, 4, 7, 7\)"):
        model.decode(torch.zeros(2, 4, 7, 7))
    with pytest.raises(ValueError):
        model.moments(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="kl_weight must be a number >= 0"):
        KLAutoencoderConfig(kl_weight=-1)
    with pytest.raises(ValueError, match="width must be a positive int"):
        KLAutoencoderConfig(width=0)
