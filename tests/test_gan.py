"""The GAN of notebook 05: its losses against hand computations on fixed logits, the R1 penalty against finite
differences, the conditional generator drawing the digit it is told, the hybrids' steps, Diffusion-GAN's adaptive
noise, stability over seeds at the ci profile, the same pair on notebook 08's 32 x 32 colour faces, and clear
errors for bad input."""
import math
from dataclasses import replace

import pytest
import torch

from minigen import metrics
from minigen.data import load_mnist, make_faces
from minigen.models.gan import (GAN, GAN_PRESETS, AdaptiveNoise, FlowGAN, GANConfig, VAEGAN, count_modes,
                                discriminator_loss, generator_loss, r1_penalty)
from minigen.recipes import recipe
from minigen.train import Trainer

TINY = GANConfig(z_dim=8, width=4)


def test_losses_equal_hand_computations_on_fixed_logits():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 3.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # the judge: -mean log sigmoid(D(real)) - mean log(1 - sigmoid(D(fake)))
    want_d = -(math.log(sig(2)) + math.log(sig(-1))) / 2 - (math.log(1 - sig(0)) + math.log(1 - sig(3))) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(want_d, rel=1e-6)
    # non-saturating: -mean log sigmoid(D(fake)); saturating: mean log(1 - sigmoid(D(fake)))
    assert generator_loss(fake).item() == pytest.approx(-(math.log(sig(0)) + math.log(sig(3))) / 2, rel=1e-6)
    assert generator_loss(fake, "saturating").item() == pytest.approx(
        (math.log(1 - sig(0)) + math.log(1 - sig(3))) / 2, rel=1e-6)
    # hinge: mean relu(1 - D(real)) + mean relu(1 + D(fake)); generator: -mean D(fake)
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx((0 + 2) / 2 + (1 + 4) / 2)
    assert generator_loss(fake, "hinge").item() == pytest.approx(-1.5)


def test_saturating_loss_has_no_gradient_where_the_judge_wins():
    logits = torch.tensor([-10.0], requires_grad=True)   # the judge is sure this fake is fake
    (sat,) = torch.autograd.grad(generator_loss(logits, "saturating"), logits)
    (ns,) = torch.autograd.grad(generator_loss(logits, "non-saturating"), logits)
    assert abs(sat.item()) < 1e-4 < 0.99 < abs(ns.item())


def test_r1_penalty_equals_a_finite_difference_estimate():
    torch.manual_seed(0)
    judge = GAN(TINY).discriminator.double()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    penalty = r1_penalty(judge(x), x).item()
    # central differences of D along every pixel of every image: sum of squared partials, mean over the batch
    eps, flat = 1e-5, x.detach().flatten(1)
    total = 0.0
    for b in range(2):
        for i in range(0, 784, 1):
            up, down = flat.clone(), flat.clone()
            up[b, i] += eps
            down[b, i] -= eps
            with torch.no_grad():
                d = (judge(up.view_as(x)) - judge(down.view_as(x)))[b] / (2 * eps)
            total += d.item() ** 2
    assert penalty == pytest.approx(total / 2, rel=1e-5)
    assert r1_penalty(judge(x), x).requires_grad  # create_graph: the judge can minimise it


def _train(config, steps, data, seed=0, lr=1e-3):
    r = recipe("gan", "ci")
    torch.manual_seed(seed)
    gan = GAN(config)
    trainer = Trainer(gan, data, replace(r.train, steps=steps, lr=lr, seed=seed, progress=False, ema_decay=None))
    return gan, trainer.fit()


def test_conditional_generator_draws_the_class_it_is_given():
    train = load_mnist("train", n=10000)
    gan, _ = _train(GAN_PRESETS["GAN-S-C"], 400, (train.images, train.labels))
    y = torch.arange(500) % 10
    x = gan.sample(500, y=y, generator=torch.Generator().manual_seed(0))
    accuracy = (metrics.classifier_probs(x).argmax(1) == y).float().mean().item()
    print(f"metric classifier reads the requested digit in {accuracy:.2f} of 500 samples (chance 0.10)")
    assert accuracy > 0.25


@pytest.mark.parametrize("seed", range(5))
def test_training_never_diverges_at_the_ci_profile(seed):
    r = recipe("gan", "ci")
    images = load_mnist("train", n=2000).images
    gan, trainer = _train(GAN_PRESETS[r.preset], r.train.steps, images, seed=seed, lr=r.train.lr)
    for key in ("d_loss", "g_loss"):
        values = trainer.history[key]
        assert all(math.isfinite(v) for v in values), key
    assert max(trainer.history["d_loss"]) < 10 and max(trainer.history["g_loss"]) < 20
    assert torch.isfinite(gan.sample(16)).all()


def test_bad_input_gets_a_clear_error():
    gan = GAN(TINY)
    trainer = Trainer(gan, torch.zeros(4, 1, 28, 28), recipe("gan", "ci").train)
    with pytest.raises(ValueError, match=r"images of shape \(B, 1, 28, 28\), got \(4, 1, 32, 32\)"):
        gan.train_step(torch.zeros(4, 1, 32, 32), trainer)
    conditional = GAN(GANConfig(z_dim=8, width=4, num_classes=10))
    with pytest.raises(ValueError, match="unknown class id 12; labels must be in 0..9"):
        conditional.sample(3, y=torch.tensor([1, 12, 3]))
    with pytest.raises(ValueError, match="class-conditional"):
        conditional.sample(3)
    with pytest.raises(ValueError, match="unconditional"):
        gan.sample(3, y=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"noise of shape \(B, 8\)"):
        gan.generate(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="GANConfig.loss must be one of"):
        GANConfig(loss="wasserstein")
    with pytest.raises(ValueError, match="truncation must be > 0"):
        gan.sample(2, truncation=0.0)


def test_faces_preset_makes_and_judges_32x32_colour_images():
    gan = GAN(GAN_PRESETS["GAN-F"])
    x = gan.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert gan.judge(make_faces(4, seed=0).images, None).shape == (4,)
    other = GAN(GANConfig(z_dim=8, width=4, channels=2, image_size=16))   # any multiple of 4, any channel count
    assert other.sample(3).shape == (3, 2, 16, 16) and other.judge(torch.zeros(3, 2, 16, 16), None).shape == (3,)


def test_faces_training_steps_stay_finite():
    faces = make_faces(16, seed=0)
    torch.manual_seed(0)
    gan = GAN(GAN_PRESETS["GAN-F"])
    train = replace(recipe("gan", "ci").train, steps=4, batch_size=8, progress=False, ema_decay=None, log_every=1)
    trainer = Trainer(gan, faces.images, train).fit()
    for key in ("d_loss", "g_loss", "r1"):
        assert len(trainer.history[key]) and all(math.isfinite(v) for v in trainer.history[key]), key
    assert torch.isfinite(gan.sample(4)).all()


def test_faces_shape_errors_name_the_configured_shape():
    with pytest.raises(ValueError, match=r"GANConfig.image_size must be a positive multiple of 4 .* got 30"):
        GANConfig(image_size=30)
    with pytest.raises(ValueError, match=r"GANConfig.image_size must be a positive multiple of 4 .* got 0"):
        GANConfig(image_size=0)
    with pytest.raises(ValueError, match=r"GANConfig.channels must be a positive int, got 0"):
        GANConfig(channels=0)
    gan = GAN(GAN_PRESETS["GAN-F"])
    digits = torch.zeros(2, 1, 28, 28)
    want = r"Discriminator expects images of shape \(B, 3, 32, 32\), got \(2, 1, 28, 28\)"
    with pytest.raises(ValueError, match=want):
        gan.judge(digits, None)
    trainer = Trainer(gan, make_faces(8, seed=0).images, recipe("gan", "ci").train)
    with pytest.raises(ValueError, match=r"GAN.train_step expects images of shape \(B, 3, 32, 32\)"):
        gan.train_step(digits, trainer)
    with pytest.raises(ValueError, match=r"Discriminator expects images of shape \(B, 1, 28, 28\)"):
        GAN(TINY).discriminator(torch.zeros(2, 3, 32, 32))


def test_truncation_keeps_every_noise_value_within_the_threshold():
    z = GAN(TINY).noise_like(1000, torch.Generator().manual_seed(0), truncation=0.5)
    assert z.abs().max() <= 0.5 and z.std() < 0.35   # a normal truncated at 0.5 has std 0.27


def test_adaptive_noise_rises_when_the_judge_is_sure_and_falls_when_it_is_not():
    noise = AdaptiveNoise(100, target=0.6, every=2, step_size=0.05)
    for _ in range(8):
        noise.observe(torch.full((16,), 3.0))   # every real image judged real: r = 1 > 0.6
    assert noise.ceiling.item() == pytest.approx(20.0)
    for _ in range(4):
        noise.observe(torch.full((16,), -3.0))  # r = -1 < 0.6
    assert noise.ceiling.item() == pytest.approx(10.0)
    t = noise.draw(1000, "cpu")
    assert t.min() >= 0 and t.max() <= 10
    x = torch.ones(2000, 1, 1, 1)
    out = noise(x, torch.full((2000,), 99))    # the last level: mostly noise
    assert abs(out.mean().item() - noise.abar[99].sqrt().item()) < 0.05


def test_diffusion_gan_step_moves_the_noise_ceiling():
    config = GANConfig(z_dim=8, width=4, noise_levels=50)
    gan = GAN(config)
    trainer = Trainer(gan, load_mnist("train", n=256).images, recipe("gan", "ci").train)
    terms = trainer.train_step(load_mnist("train", n=64).images)
    assert "noise_ceiling" in terms and gan.noise.signs[1] == 64


def test_hybrid_steps_move_both_players():
    vae_gan = recipe("vae-gan", "ci").build()
    flow_gan = recipe("flow-gan", "ci").build(mode="adversarial")
    assert isinstance(vae_gan, VAEGAN) and isinstance(flow_gan, FlowGAN)
    images = load_mnist("train", n=32).images
    for model, name in ((vae_gan, "vae"), (flow_gan, "flow")):
        trainer = Trainer(model, images, recipe(f"{name}-gan", "ci").train)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        terms = trainer.train_step(images)
        moved = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        assert {name, "discriminator"} <= moved and math.isfinite(float(terms["g_loss"]))
    with pytest.raises(ValueError, match="FlowGAN mode must be one of"):
        recipe("flow-gan", "ci").build(mode="wgan")
    with pytest.raises(TypeError, match="builds no hybrid"):
        recipe("gan", "ci").build(mode="hybrid")


def test_count_modes():
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    points = torch.cat([torch.zeros(50, 2), torch.full((50, 2), 0.1) + centres[1], torch.full((1, 2), 20.0)])
    assert count_modes(points, centres, radius=1.0) == 2
