"""Measured figures are written by code; course checkpoints are verified before they are used."""
import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from minigen import checkpoints, recipes, results
from minigen.diffusion import Diffusion
from minigen.models.unet import UNet, UNetConfig
from minigen.train import CheckpointError


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.config = None
        self.layer = nn.Linear(2, width)


def test_record_skips_ci_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGEN_PROFILE", "ci")
    results.record("00_x", "metric", 1.0, path=tmp_path / "results.json")
    assert not (tmp_path / "results.json").exists()
    results.record("00_x", "wall time", 9.0, path=tmp_path / "results.json", profile="ci")  # explicit: written
    assert json.loads((tmp_path / "results.json").read_text())[0]["profile"] == "ci"


def test_record_writes_and_replaces_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGEN_PROFILE", "cpu")
    path = tmp_path / "results.json"
    results.record("02_vae", "IWAE bound", 95.0, baseline=86.76, baseline_label="(Burda)", unit="nats", path=path)
    results.record("02_vae", "IWAE bound", 91.0, unit="nats", path=path)
    rows = json.loads(path.read_text())
    assert [(r["value"], r["profile"]) for r in rows] == [(91.0, "cpu")]
    table = path.with_suffix(".md").read_text()
    assert "| IWAE bound | cpu | 91 nats |" in table and "## 02_vae" in table


def test_record_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match="must be a finite number"):
        results.record("04_x", "FD", float("nan"), path=tmp_path / "results.json")


def test_bench_records_gpu_figures_and_shows_them(tmp_path, monkeypatch):
    """`python -m minigen.bench --record` stores minigen beside its baseline; recorded_table prints GPU rows only."""
    import minigen.bench as bench
    monkeypatch.setenv("MINIGEN_PROFILE", "gpu")
    monkeypatch.setattr(results, "results_path", lambda: tmp_path / "results.json")
    assert "No kernel figures recorded yet" in bench.recorded_table()
    rows = [dict(kernel="attention", shape="s", mode="fwd", contender=c, ms=1.0, value=v)
            for c, v in (("minigen", 300.0), ("sdpa", 400.0), ("sdpa-math", 9.0))]
    rows.append(dict(kernel="groupnorm_silu", shape="t", mode="fwd", contender="minigen", ms=1.0, value=None, roof=9.0))
    bench.record(rows, torch.bfloat16)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [(r["metric"], r["value"], r["baseline"], r["unit"]) for r in stored] == [
        ("attention fwd s bfloat16", 300.0, 400.0, "TFLOP/s")]  # failed timings (None) are not recorded
    monkeypatch.setattr(results, "machine", lambda: "NVIDIA H200, torch 2.11")
    bench.record(rows, torch.bfloat16)
    table = bench.recorded_table()
    assert "NVIDIA H200" in table and "0.75x" in table and "CPU" not in table


def test_course_checkpoint_round_trip(tmp_path):
    model = Net()
    checkpoints.save("tiny", model, {"steps": 3}, directory=tmp_path)
    loaded = checkpoints.load("tiny", Net(), directory=tmp_path)
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert torch.allclose(a, b, atol=1e-3)  # stored in fp16
    assert loaded.layer.weight.dtype == torch.float32
    entry = checkpoints.read_manifest(tmp_path)["tiny"]
    assert entry["steps"] == 3 and len(entry["sha256"]) == 64


def test_missing_course_checkpoint_is_skipped_with_message(tmp_path, capsys):
    assert checkpoints.load("absent", Net(), directory=tmp_path) is None
    assert "not available" in capsys.readouterr().out


def test_tampered_course_checkpoint_is_an_error(tmp_path):
    checkpoints.save("tiny", Net(), {}, directory=tmp_path)
    path = tmp_path / "tiny.pt"
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoints.load("tiny", Net(), directory=tmp_path)


def test_mismatched_course_checkpoint_is_an_error(tmp_path):
    checkpoints.save("tiny", Net(width=4), {}, directory=tmp_path)
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoints.load("tiny", Net(width=5), directory=tmp_path)


def test_unknown_recipe_is_named():
    with pytest.raises(KeyError, match="no recipe named 'nope'"):
        checkpoints.build("nope")


def _tiny_course_diffusion(num_steps=None) -> Diffusion:
    """The diffusion course model as recipe("diffusion", "gpu") builds it, with a tiny U-Net (and optionally
    another chain length)."""
    r = recipes.recipe("diffusion", "gpu")
    config = r.diffusion_config()
    tiny = UNetConfig(width=8, mults=(1, 2), blocks=1, attention=False, groups=4)
    schedule = {} if num_steps is None else {"num_steps": num_steps}
    return Diffusion.from_config(UNet(tiny), replace(config, denoiser=tiny, **schedule))


def test_diffusion_course_model_saves_and_loads_as_the_recipe_builds_it(tmp_path):
    """What course_checkpoint("diffusion") saves (the EMA Diffusion wrapper) loads into what notebook 04 builds
    (recipe("diffusion", "gpu").build()): same class, same config with its schedule, same weights."""
    torch.manual_seed(1)
    trained = _tiny_course_diffusion()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    checkpoints.save("diffusion", trained, {"steps": 5}, directory=tmp_path)
    loaded = checkpoints.load("diffusion", _tiny_course_diffusion(), directory=tmp_path)
    assert isinstance(loaded, Diffusion) and loaded.config == trained.config
    assert loaded.config.num_steps == 1000 and loaded.config.schedule == "cosine" and loaded.num_classes == 10
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(b, a.half().float())   # stored in fp16
    with pytest.raises(CheckpointError, match=r"another config.*'num_steps': \(1000, 100\)"):
        checkpoints.load("diffusion", _tiny_course_diffusion(num_steps=100), directory=tmp_path)
    with pytest.raises(CheckpointError, match="holds a Diffusion, not a UNet"):
        checkpoints.load("diffusion", UNet(trained.config.denoiser), directory=tmp_path)


def test_the_full_size_diffusion_course_model_round_trips(tmp_path):
    """The real gpu recipe's model (UNet-L in its Diffusion wrapper) fits the 4 MB limit and loads back into a
    fresh recipe("diffusion", "gpu").build()."""
    model = recipes.recipe("diffusion", "gpu").build()
    path = checkpoints.save("diffusion", model, {"steps": 0}, directory=tmp_path)
    assert path.stat().st_size <= checkpoints.MAX_BYTES
    loaded = checkpoints.load("diffusion", recipes.recipe("diffusion", "gpu").build(), directory=tmp_path)
    assert loaded.config == model.config


def test_recipes_table_names_the_course_checkpoints():
    assert sorted(checkpoints.RECIPES) == ["diffusion", "flow", "vae"]
    assert all(callable(f) for f in checkpoints.RECIPES.values())


def test_shipped_course_checkpoints_load_into_their_recipes():
    """Every checkpoint data/checkpoints/manifest.json lists is there, matches its sha256 and loads into the model
    the recipe its entry names builds (what notebooks 02-04 do); at least the diffusion one is shipped."""
    manifest = checkpoints.read_manifest()
    assert "diffusion" in manifest
    for name, entry in manifest.items():
        r = recipes.shipped_recipe(name, entry)
        assert r.profile == entry.get("profile", "gpu") and r.preset == entry.get("preset", r.preset), name
        model = checkpoints.load_model(name)
        assert model is not None and not model.training and model.config == r.build().config, name
        built = recipes.checkpoint_recipe(name, "cuda" if r.profile == "gpu" else "cpu")
        assert entry["steps"] == built.train.steps, name  # built by the recipe, not a shorter run


def test_checkpoint_recipe_is_the_gpu_recipe_on_a_gpu_and_the_cpu_recipe_run_longer_on_a_cpu():
    for name in checkpoints.RECIPES:
        assert recipes.checkpoint_recipe(name, "cuda") == recipes.recipe(name, "gpu")
        r, cpu = recipes.checkpoint_recipe(name, "cpu"), recipes.recipe(name, "cpu")
        if name in recipes.CPU_CHECKPOINT_STEPS:   # the notebook's own network and schedule, more steps
            assert (r.profile, r.preset) == ("cpu", cpu.preset)
            assert r.train == replace(cpu.train, steps=recipes.CPU_CHECKPOINT_STEPS[name]) != cpu.train
        else:                                      # diffusion: a GPU recipe whatever the machine
            assert r == recipes.recipe(name, "gpu")


def test_load_model_builds_the_recipe_the_manifest_names(tmp_path, monkeypatch, capsys):
    from minigen.models.vae import VAE

    monkeypatch.setenv("MINIGEN_CHECKPOINT_DIR", str(tmp_path))
    assert checkpoints.load_model("vae") is None and "not available" in capsys.readouterr().out
    r = recipes.recipe("vae", "cpu")
    model = r.build()
    checkpoints.save("vae", model, {"steps": 5, "profile": "cpu", "preset": r.preset})
    loaded = checkpoints.load_model("vae", "cpu")
    assert isinstance(loaded, VAE) and loaded.config == model.config != recipes.recipe("vae", "gpu").model_config()
    assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(model.parameters(), loaded.parameters()))