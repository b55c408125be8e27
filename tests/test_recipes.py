"""minigen.recipes: one place for each course model's preset and TrainConfig per profile."""
import dataclasses

import pytest
import torch

import minigen
from minigen import recipes
from minigen.diffusion import Diffusion, DiffusionConfig
from minigen.models.autoencoder import AE_PRESETS, Autoencoder
from minigen.models.flow import FLOW_PRESETS, Flow
from minigen.models.mae import MAE, MAE_PRESETS
from minigen.models.unet import UNET_PRESETS, UNet
from minigen.models.vae import VAE, VAE_PRESETS
from minigen.profile import PROFILES
from minigen.recipes import BinarizedBatches, Recipe, recipe
from minigen.train import TrainConfig

PROFILE_NAMES = ("ci", "cpu", "gpu")

# What the notebooks (01-04) train for their main model, profile by profile, and what the former
# course_checkpoint() functions in the model files trained for gpu: the recipes must keep every number.
EXPECTED = {
    ("autoencoder", "ci"): ("AE-S", dict(steps=120, batch_size=64, lr=2e-3, warmup=50, cosine=True, seed=0)),
    ("autoencoder", "cpu"): ("AE-B", dict(steps=1500, batch_size=128, lr=2e-3, warmup=50, cosine=True, seed=0)),
    ("autoencoder", "gpu"): ("AE-L", dict(steps=6000, batch_size=256, lr=2e-3, warmup=50, cosine=True, seed=0)),
    ("mae", "ci"): ("MAE-S", dict(steps=200, batch_size=64, lr=4e-3, weight_decay=0.05, warmup=20, cosine=True)),
    ("mae", "cpu"): ("MAE-B", dict(steps=1500, batch_size=128, lr=3e-3, weight_decay=0.05, warmup=100, cosine=True)),
    ("mae", "gpu"): ("MAE-L", dict(steps=8000, batch_size=256, lr=2e-3, weight_decay=0.05, warmup=400, cosine=True)),
    ("vae", "ci"): ("VAE-S", dict(steps=100, batch_size=64, lr=1e-3, cosine=True, log_every=10, seed=0)),
    ("vae", "cpu"): ("VAE-B", dict(steps=3500, batch_size=128, lr=1e-3, cosine=True, log_every=10, seed=0)),
    ("vae", "gpu"): ("VAE-L", dict(steps=30000, batch_size=128, lr=1e-3, cosine=True, seed=0)),
    ("flow", "ci"): ("Flow-S", dict(steps=30, batch_size=32, lr=2e-3, warmup=5, cosine=True, grad_clip=50.0)),
    ("flow", "cpu"): ("Flow-B", dict(steps=3300, batch_size=64, lr=2e-3, warmup=100, cosine=True, grad_clip=50.0)),
    ("flow", "gpu"): ("Flow-L", dict(steps=12000, batch_size=128, lr=1e-3, warmup=500, cosine=True, grad_clip=50.0)),
    ("diffusion", "ci"): ("UNet-S", dict(steps=40, batch_size=32, lr=2e-3, warmup=5, cosine=True, ema_decay=0.9)),
    ("diffusion", "cpu"): ("UNet-B", dict(steps=1500, batch_size=128, lr=2e-3, warmup=100, cosine=True,
                                          ema_decay=0.995)),
    ("diffusion", "gpu"): ("UNet-L", dict(steps=8000, batch_size=256, lr=2e-3, warmup=200, cosine=True,
                                          ema_decay=0.999)),
}
MODELS = {"autoencoder": (Autoencoder, AE_PRESETS), "mae": (MAE, MAE_PRESETS), "vae": (VAE, VAE_PRESETS),
          "flow": (Flow, FLOW_PRESETS), "diffusion": (UNet, UNET_PRESETS)}


@pytest.mark.parametrize("name, profile", list(EXPECTED))
def test_each_recipe_keeps_the_notebooks_numbers(name, profile):
    preset, train = EXPECTED[name, profile]
    r = recipe(name, profile)
    assert (r.name, r.profile, r.preset) == (name, profile, preset)
    assert r.train == TrainConfig(**train), f"{name} at {profile}: {r.train}"
    assert r.preset in MODELS[name][1]


def test_autoencoder_and_mae_take_the_profiles_batch_size():
    for profile in PROFILE_NAMES:
        for name in ("autoencoder", "mae"):
            assert recipe(name, profile).train.batch_size == PROFILES[profile].batch_size


@pytest.mark.parametrize("name", list(MODELS))
def test_build_makes_the_presets_model_and_model_config_is_a_copy(name):
    cls, presets = MODELS[name]
    r = recipe(name, "ci")
    config = r.model_config()
    assert config == presets[r.preset] and config is not presets[r.preset]
    first = dataclasses.fields(config)[0].name
    setattr(config, first, "changed")                    # changing the copy leaves the preset alone
    assert getattr(presets[r.preset], first) != "changed"
    minigen.seed_everything(3)
    model = r.build()
    minigen.seed_everything(3)
    by_hand = cls(presets[r.preset])
    built = model.model if isinstance(model, Diffusion) else model
    assert type(built) is cls and built.config == presets[r.preset]
    for a, b in zip(built.state_dict().values(), by_hand.state_dict().values()):
        assert torch.equal(a, b)                         # the same draws of the initial weights, number for number


def test_the_diffusion_recipe_wraps_the_unet_with_its_schedule():
    for profile, num_steps in (("ci", 100), ("cpu", 1000), ("gpu", 1000)):
        r = recipe("diffusion", profile)
        model = r.build()
        assert isinstance(model, Diffusion) and isinstance(model.model, UNet)
        assert model.config == r.diffusion_config() == DiffusionConfig(
            schedule="cosine", num_steps=num_steps, parameterization="eps", num_classes=10, p_uncond=0.1,
            denoiser=UNET_PRESETS[r.preset])
        assert model.schedule.num_steps == num_steps and model.null_label == 10
    assert recipe("vae", "ci").diffusion is None and recipe("vae", "ci").diffusion_config() is None


def test_build_places_the_model_on_a_device():
    model = recipe("flow", "ci").build(device="cpu")
    assert next(model.parameters()).device == torch.device("cpu")


def test_default_profile_is_the_active_one(monkeypatch):
    for profile in PROFILE_NAMES:
        monkeypatch.setenv("MINIGEN_PROFILE", profile)
        assert recipe("vae").profile == profile and recipe("vae") == recipe("vae", profile)


def test_unknown_name_or_profile_lists_the_known_ones():
    known = "autoencoder, mae, vae, flow, diffusion"
    with pytest.raises(ValueError, match=f"no recipe named 'wgan'; known recipes: {known}"):
        recipe("wgan", "ci")
    with pytest.raises(ValueError, match="unknown profile 'tpu'; known profiles: ci, cpu, gpu"):
        recipe("vae", "tpu")
    with pytest.raises(ValueError, match="no course checkpoint for 'mae'; course checkpoints: vae, flow, diffusion"):
        recipes.course_checkpoint("mae")


def test_a_recipe_is_frozen_and_sizes_are_apart_from_budgets():
    r = recipe("vae", "ci")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.preset = "VAE-L"
    bigger = dataclasses.replace(r, preset="VAE-L")     # another size on the same budget
    assert bigger.train == r.train and bigger.model_config() == VAE_PRESETS["VAE-L"]
    assert isinstance(r, Recipe)


def test_binarized_batches_follow_the_epoch_order_and_resume():
    images = torch.linspace(-1, 1, 10).reshape(10, 1, 1, 1).expand(10, 1, 28, 28).contiguous()
    data = BinarizedBatches(images, seed=0)
    g = torch.Generator().manual_seed(0)
    first = data(6, g)
    assert first.shape == (6, 1, 28, 28) and set(first.unique().tolist()) <= {0.0, 1.0}
    state, g_state = data.state_dict(), g.get_state()
    second = data(6, g)                                  # crosses into the second epoch
    resumed = BinarizedBatches(images, seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(6, torch.Generator().set_state(g_state)), second)


@pytest.fixture
def tiny_course(monkeypatch):
    """course_checkpoint's wiring at a toy budget: the smallest presets, 3 steps of 8, 64 digits, IWAE k = 5 and
    50 DDIM-2 samples."""
    from minigen.data import load_mnist

    gpu_recipe, small = recipes.recipe, {"vae": "VAE-S", "flow": "Flow-S", "diffusion": "UNet-S"}
    sample = recipes.ddim_sample

    def tiny(name, profile=None):
        r = gpu_recipe(name, profile)
        return dataclasses.replace(r, preset=small[name], train=dataclasses.replace(r.train, steps=3, batch_size=8,
                                                                                     progress=False))

    monkeypatch.setattr(recipes, "recipe", tiny)
    monkeypatch.setattr(recipes, "CPU_CHECKPOINT_STEPS", {"vae": 3, "flow": 3})  # the cpu checkpoint's run, tiny too
    monkeypatch.setattr(recipes, "load_mnist", lambda split: load_mnist(split, n=64))
    monkeypatch.setattr(recipes, "ddim_sample", lambda model, schedule, shape, *, y, **kw: sample(
        model, schedule, (50, *shape[1:]), y=y[:50], **{**kw, "steps": 2}))
    evaluate = recipes.evaluate_vae
    monkeypatch.setattr(recipes, "evaluate_vae", lambda model, images, k: evaluate(model, images, k=5))
    return tiny


@pytest.mark.parametrize("name, kind, keys", [
    ("vae", VAE, {"steps", "test_nll_iwae_k1000", "test_nll_elbo", "profile", "preset"}),
    ("flow", Flow, {"steps", "metric", "metric_name", "half", "profile", "preset"}),
    ("diffusion", Diffusion, {"steps", "metric", "metric_name", "profile", "preset"}),
])
def test_course_checkpoint_is_seeded_measured_and_loads_into_the_recipes_model(tiny_course, tmp_path, name, kind, keys):
    from minigen import checkpoints

    model, info = recipes.course_checkpoint(name)
    torch.manual_seed(123)                               # a different global state: the recipe's seed must win
    again, _ = recipes.course_checkpoint(name)
    assert type(model) is kind and set(info) == keys and info["steps"] == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    checkpoints.save(name, model, dict(info), half=info.get("half", True), directory=tmp_path)
    loaded = checkpoints.load(name, tiny_course(name, "gpu").build(), directory=tmp_path)
    assert loaded.config == model.config
    if name == "diffusion":                              # the EMA wrapper, with the gpu schedule in its config
        assert loaded.config.num_steps == 1000 and loaded.config.denoiser == UNET_PRESETS["UNet-S"]


def test_notebook_06_recipes_latent_space_and_both_objectives_on_one_budget():
    from minigen.diffusion import FlowMatching
    from minigen.models.dit import DiT
    from minigen.models.latent import KLAutoencoder

    for profile in PROFILE_NAMES:
        ae = recipe("latent", profile)
        assert isinstance(ae.build(), KLAutoencoder) and ae.train.batch_size == PROFILES[profile].batch_size
        eps, fm = recipe("dit", profile), recipe("dit-fm", profile)
        assert eps.preset == fm.preset and eps.train == fm.train       # the comparison is at equal budget
        built_eps, built_fm = eps.build(), fm.build()
        assert isinstance(built_eps, Diffusion) and isinstance(built_eps.model, DiT)
        assert isinstance(built_fm, FlowMatching) and isinstance(built_fm.model, DiT)
        assert built_fm.config.t_sampling == "logit-normal" and built_fm.null_label == 10
        assert built_eps.config.schedule == "cosine" and built_eps.null_label == 10
