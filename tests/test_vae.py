"""The VAE: its ELBO against a hand computation, the IWAE bound's ordering, the reparameterization's
statistics, the binarization, the gaussian likelihood on RGB faces, and clear errors for wrong inputs."""
import math

import pytest
import torch

from minigen.exercises import vae as exercises
from minigen.models.vae import (VAE, VAE_PRESETS, VAEConfig, binarize, evaluate, gaussian_kl, gaussian_log_likelihood,
                                 reparameterize)
from minigen.recipes import BinarizedBatches

TINY = VAEConfig(latent_dim=2, width=4, hidden=8)
TINY_FACES = VAEConfig(latent_dim=2, width=4, hidden=8, channels=3, image_size=32, likelihood="gaussian")


def _digits(n=8, seed=0):
    """n binary 28x28 images: the first n MNIST test digits, binarized with a fixed seed."""
    from minigen.data import load_mnist

    return binarize(load_mnist("test", n=n).images, seed=seed)


def _faces(n=8, seed=0):
    """n procedural cartoon faces (n, 3, 32, 32) in [-1, 1] and their attributes (n, 5)."""
    from minigen.data import make_faces

    faces = make_faces(n, seed=seed)
    return faces.images, faces.attributes


def test_elbo_matches_a_hand_computation():
    # Pin the model so both terms are known in closed form: the encoder's last layer outputs the constant
    # (mu, logvar) = ((1, 0), (0, log 4)) and the decoder's last layer the constant logit 0 for every pixel.
    model = VAE(TINY)
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, math.log(4.0)]))
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.fill_(0.0)
    x = _digits(3)
    # logit 0 -> p = 1/2 for every pixel, whatever z is: log p(x|z) = 784 log(1/2).
    recon = 784 * math.log(0.5)
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 (mu^2 + s^2 - 1 - log s^2) per dimension:
    kl = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 4 - 1 - math.log(4))
    assert torch.allclose(model.elbo(x), torch.full((3,), recon - kl, dtype=torch.float32), atol=1e-3)
    terms = model.loss(x)
    assert terms["recon"].item() == pytest.approx(-recon, abs=1e-3)
    assert terms["kl"].item() == pytest.approx(kl, abs=1e-5)
    assert terms["loss"].item() == pytest.approx(-(recon - kl), abs=1e-3)


def test_elbo_of_a_random_model_matches_the_formula_with_the_same_noise():
    model = VAE(TINY).eval()
    x = _digits(4)
    got = model.elbo(x, torch.Generator().manual_seed(7))
    # by hand: encode, reparameterize with the same eps, Bernoulli log-likelihood and analytic KL
    mu, logvar = model.encoder(2 * x - 1).chunk(2, dim=-1)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    z = mu + torch.exp(logvar / 2) * eps
    p = torch.sigmoid(model.decoder(z))
    log_lik = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=(1, 2, 3))
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)
    assert torch.allclose(got, log_lik - kl, atol=1e-3)


def test_beta_weights_only_the_kl_in_the_loss():
    x = _digits(4)
    plain, heavy = VAE(TINY), VAE(VAEConfig(latent_dim=2, width=4, hidden=8, beta=4.0))
    heavy.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    a = plain.loss(x)
    torch.manual_seed(1)
    b = heavy.loss(x)
    assert b["loss"].item() == pytest.approx(a["recon"].item() + 4.0 * a["kl"].item(), rel=1e-5)
    assert b["elbo"].item() == pytest.approx(a["elbo"].item(), rel=1e-6)


def test_iwae_bound_is_above_the_elbo_and_tightens_with_k():
    model = VAE(TINY).eval()
    with torch.no_grad():  # a poor proposal: q(z|x) 7x wider than the prior, so the ELBO pays KL ~ 4.4 nats
        model.encoder[-1].bias[2:].fill_(2.0)  # log-variances; importance weighting wins most of it back
    x = _digits(24)
    g = torch.Generator().manual_seed(0)
    elbo = torch.stack([model.elbo(x, g) for _ in range(20)]).mean(0)   # (B,) averaged over 20 draws
    bounds = {k: model.iwae(x, k, g).mean().item() for k in (1, 10, 100)}
    assert bounds[1] == pytest.approx(elbo.mean().item(), abs=2.0)     # k = 1 is a one-sample ELBO
    assert elbo.mean().item() < bounds[10] < bounds[100]
    assert (model.iwae(x, 100, g) >= elbo - 1e-3).float().mean() > 0.9  # per image too, almost always


def test_iwae_equals_the_metrics_bound_on_its_log_weights():
    """VAE.iwae writes the bound out (a model file imports no metrics); it must be minigen.metrics.iwae_bound."""
    from minigen.metrics import iwae_bound

    model = VAE(TINY).eval()
    x = _digits(3)
    with torch.no_grad():
        lw = model.log_weights(x, 50, torch.Generator().manual_seed(3))  # (K, B)
    assert lw.shape == (50, 3)
    expected = torch.logsumexp(lw, 0) - math.log(50)
    assert torch.allclose(iwae_bound(lw), expected)
    assert torch.allclose(model.iwae(x, 50, torch.Generator().manual_seed(3), chunk=50), expected, atol=1e-4)


def test_reparameterized_samples_have_the_requested_mean_and_variance():
    mu = torch.tensor([[1.0, -2.0, 0.0]])
    logvar = torch.log(torch.tensor([[1.0, 0.25, 9.0]]))
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0), n=200_000)   # (N, 1, 3)
    assert z.shape == (200_000, 1, 3)
    # standard errors: sd / sqrt(N) <= 3 / 447 = 0.007 for the mean; the variance's is ~0.3 % relative
    assert torch.allclose(z.mean(0), mu, atol=0.03)
    assert torch.allclose(z.var(0), logvar.exp(), rtol=0.02)


def test_reparameterization_passes_gradients_to_mean_and_log_variance():
    mu = torch.zeros(4, 2, requires_grad=True)
    logvar = torch.zeros(4, 2, requires_grad=True)
    reparameterize(mu, logvar).sum().backward()
    assert torch.equal(mu.grad, torch.ones(4, 2))   # dz/dmu = 1
    assert logvar.grad.abs().sum() > 0


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(5, 3, generator=g) for _ in range(4))
    q = torch.distributions.Normal(mu_q, (lv_q / 2).exp())
    p = torch.distributions.Normal(mu_p, (lv_p / 2).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_p, lv_p), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_binarize_is_fixed_for_a_seed_and_follows_intensity():
    images = torch.full((2000, 1, 28, 28), 0.5)   # intensity (0.5 + 1) / 2 = 0.75
    a, b = binarize(images), binarize(images)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert a.mean().item() == pytest.approx(0.75, abs=0.01)
    assert not torch.equal(binarize(images, seed=1), a)


def test_binarized_batches_resample_the_bits_and_resume():
    images = torch.zeros(10, 1, 28, 28)   # intensity 1/2
    data = BinarizedBatches(images)
    g = torch.Generator().manual_seed(0)
    first, second = data(10, g), data(10, g)
    assert first.shape == (10, 1, 28, 28) and not torch.equal(first, second)
    assert data.state_dict() == {"epoch": 2, "pos": 0}


def test_presets_are_named_by_size_and_grow():
    assert list(VAE_PRESETS) == ["VAE-S", "VAE-B", "VAE-L", "VAE-F", "VAE-F-L"]
    mnist = [VAE_PRESETS[name] for name in ("VAE-S", "VAE-B", "VAE-L")]
    assert all((c.channels, c.image_size, c.likelihood) == (1, 28, "bernoulli") for c in mnist)
    sizes = [sum(p.numel() for p in VAE(c).parameters()) for c in mnist]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    assert sizes[-1] * 2 < 4 * 2**20  # the largest fits a 4 MiB fp16 course checkpoint
    faces = [VAE_PRESETS[name] for name in ("VAE-F", "VAE-F-L")]
    assert all((c.channels, c.image_size, c.likelihood) == (3, 32, "gaussian") for c in faces)
    small, large = (sum(p.numel() for p in VAE(c).parameters()) for c in faces)
    assert small < large


def test_shapes_of_encode_decode_sample():
    model = VAE(VAE_PRESETS["VAE-S"])
    x = _digits(5)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 16)
    images = model.decode(mu)
    assert images.shape == (5, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
    assert model.sample(7, torch.Generator().manual_seed(0)).shape == (7, 1, 28, 28)
    assert model(x).shape == (5, 1, 28, 28)


def test_faces_preset_shapes_of_encode_decode_sample_forward():
    model = VAE(VAE_PRESETS["VAE-F"])
    x, _ = _faces(5)
    assert model.image_shape == (3, 32, 32)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 32)
    images = model.decode(mu)
    assert images.shape == (5, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    samples = model.sample(7, torch.Generator().manual_seed(0))
    assert samples.shape == (7, 3, 32, 32) and samples.min() >= -1 and samples.max() <= 1
    assert model(x).shape == (5, 3, 32, 32)
    assert model.log_weights(x, 4).shape == (4, 5) and model.iwae(x, 3).shape == (5,)
    # the learned noise level starts at sigma = 0.1 and is a parameter of the gaussian model only
    assert model.log_sigma.exp().item() == pytest.approx(0.1)
    assert "log_sigma" in dict(model.named_parameters()) and not hasattr(VAE(TINY), "log_sigma")


def test_gaussian_decode_is_the_mean_clamped_to_the_image_range():
    model = VAE(TINY_FACES)
    z = torch.randn(4, 2)
    assert torch.equal(model.decode(z), model.decoder_output(z).clamp(-1, 1))
    with torch.no_grad():
        model.decoder[-1].bias.fill_(5.0)        # a mean far above the range
    assert torch.equal(model.decode(z), torch.ones(4, 3, 32, 32))


def test_gaussian_log_likelihood_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, x = torch.randn(2, 4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    log_sigma = torch.tensor(-0.7)
    expected = torch.distributions.Normal(mean, log_sigma.exp()).log_prob(x).sum(dim=(-3, -2, -1))   # (2, 4)
    assert torch.allclose(gaussian_log_likelihood(mean, log_sigma, x), expected, rtol=1e-5)
    # inside the model: the ELBO is that log-likelihood at the reparameterized z minus the analytic KL
    model = VAE(TINY_FACES).eval()
    with torch.no_grad():
        model.log_sigma.fill_(-1.3)
    x, _ = _faces(4)
    got = model.elbo(x, torch.Generator().manual_seed(7))
    mu, logvar = model.encoder(x).chunk(2, dim=-1)           # no binarization: the images go in as they are
    z = mu + torch.exp(logvar / 2) * torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    log_lik = torch.distributions.Normal(model.decoder(z), math.exp(-1.3)).log_prob(x).sum(dim=(1, 2, 3))
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)
    assert torch.allclose(got, log_lik - kl, rtol=1e-4)


def test_a_few_training_steps_on_faces_lower_the_gaussian_loss():
    from minigen.train import TrainConfig, Trainer

    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=8, width=8, hidden=32, channels=3, image_size=32, likelihood="gaussian"))
    x, attributes = _faces(32)
    score = lambda: model.elbo(x, torch.Generator().manual_seed(0)).mean().item()  # noqa: E731
    before = score()
    trainer = Trainer(model, (x, attributes), TrainConfig(steps=30, batch_size=16, lr=3e-3, log_every=1,
                                                         progress=False))   # (images, attributes) batches
    trainer.fit()
    losses = trainer.history["loss"]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    after = score()
    assert after > before + 100                                # nats per image: the ELBO rises, the loss falls
    assert model.log_sigma.grad is not None                    # sigma is learned with the rest
    scores = evaluate(model, x, k=3)
    assert math.isfinite(scores["iwae"]) and scores["iwae"] >= scores["elbo"] - 50.0


def test_faces_wrong_inputs_and_configs_raise_clear_errors():
    model = VAE(TINY_FACES)
    x, _ = _faces(2)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model.encode(x[:, :1])                                 # one channel for an RGB model
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model.loss(torch.zeros(2, 3, 28, 28))                  # MNIST-sized
    with pytest.raises(ValueError, match=r"\[-1, 1\].*gaussian.*2 \* x - 1"):
        model.loss((x + 1) * 127.5)                            # 0..255 pixels
    with pytest.raises(TypeError, match=r"dtype"):
        model.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"gaussian.*decode"):
        model.logits(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        VAE(TINY).loss(binarize(x))                            # RGB into the MNIST model
    with pytest.raises(ValueError, match=r"image_size must be divisible by 4.*30"):
        VAEConfig(image_size=30)
    with pytest.raises(ValueError, match=r"likelihood must be one of 'bernoulli', 'gaussian', got 'laplace'"):
        VAEConfig(likelihood="laplace")
    with pytest.raises(ValueError, match=r"channels"):
        VAEConfig(channels=0)


def test_wrong_inputs_raise_clear_errors():
    model = VAE(TINY)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\).*unsqueeze"):
        model.elbo(torch.zeros(4, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model.loss(torch.zeros(4, 3, 28, 28))
    with pytest.raises(ValueError, match=r"binarize"):
        model.encode(torch.full((2, 1, 28, 28), -1.0))        # images in [-1, 1] were not binarized
    with pytest.raises(TypeError, match=r"dtype"):
        model.encode(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        model.decode(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"k must be"):
        model.iwae(_digits(2), k=0)
    with pytest.raises(ValueError, match=r"beta"):
        VAEConfig(beta=-1.0)
    with pytest.raises(ValueError, match=r"latent_dim"):
        VAEConfig(latent_dim=0)


def test_a_few_training_steps_raise_the_elbo():
    from minigen.train import TrainConfig, Trainer

    model = VAE(VAEConfig(latent_dim=4, width=8, hidden=32))
    x = _digits(128)
    before = evaluate(model, x, k=5)["elbo"]
    Trainer(model, BinarizedBatches(x * 2 - 1), TrainConfig(steps=25, batch_size=32, lr=3e-3, progress=False)).fit()
    after = evaluate(model, x, k=5)
    assert after["elbo"] > before + 20
    assert after["iwae"] >= after["elbo"] - 1.0


def test_exercise_checkers_accept_the_reference_and_reject_a_wrong_answer():
    exercises.check_gaussian_kl(gaussian_kl, strict=True)
    exercises.check_reparameterize(reparameterize, strict=True)
    with pytest.raises(AssertionError, match="gaussian_kl"):
        exercises.check_gaussian_kl(lambda mq, lq, mp, lp: 0.5 * ((mq - mp) ** 2).sum(-1), strict=True)
    with pytest.raises(AssertionError, match="reparameterize"):
        exercises.check_reparameterize(lambda mu, logvar: mu + logvar.exp() * torch.randn_like(mu),  # var, not sd
                                       strict=True)
    with pytest.raises(AssertionError, match="gradient"):
        exercises.check_reparameterize(lambda mu, logvar: (mu + (logvar / 2).exp() * torch.randn_like(mu)).detach(),
                                       strict=True)
