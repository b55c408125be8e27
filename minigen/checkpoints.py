"""Course checkpoints: full-quality models a CPU student can load beside the one they trained (DESIGN §10).

A checkpoint is made only by the repository's own code: each entry of RECIPES trains
`minigen.recipes.checkpoint_recipe(NAME)` on its data and measures it (`minigen.recipes.course_checkpoint`;
`make checkpoints`, or `python -m minigen.checkpoints build NAME`): on a GPU that is `recipe(NAME, "gpu")`; on a
CPU, for the VAE and the flow, the notebook's own cpu recipe run longer (recipes.CPU_CHECKPOINT_STEPS). The
weights go to data/checkpoints/NAME.pt (fp16 where the metric holds) and data/checkpoints/manifest.json records
their sha256, the command, machine, minutes, and the recipe's profile, preset and steps.

    course = checkpoints.load_model("vae")            # the shipped model, built from the recipe its entry names;
    if course is not None:                            # None (with a message) when the file is not shipped
        ...
    model = recipe("vae", "gpu").build()              # or load into a model you built (it must be the same config)
    checkpoints.load("vae", model)

A missing checkpoint is skipped with a message so the notebook still runs; a file whose sha256 differs from
the manifest, or whose config does not match the model, is an error.
"""
import argparse
import functools
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

import minigen

from . import recipes
from .train import CHECKPOINT_FORMAT, CheckpointError, model_config, read_checkpoint

# name -> a function that trains recipe(name, "gpu") and returns (model, info: dict)
RECIPES: dict[str, Callable[[], tuple]] = {name: functools.partial(recipes.course_checkpoint, name)
                                           for name in recipes.COURSE_CHECKPOINTS}

MAX_BYTES = 4 * 2**20  # DESIGN §10: each checkpoint at most 4 MB


def checkpoint_dir() -> Path:
    """data/checkpoints/ of the repository, or $MINIGEN_CHECKPOINT_DIR (builds running side by side each write
    their own folder and manifest; scripts/gpu_check.sh merges them)."""
    override = os.environ.get("MINIGEN_CHECKPOINT_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def read_manifest(directory: Path | None = None) -> dict:
    path = (directory or checkpoint_dir()) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load(name: str, model: torch.nn.Module, *, directory: Path | None = None) -> torch.nn.Module | None:
    """Load course checkpoint `name` into `model` (in place) and return it; None if it is not shipped."""
    directory = directory or checkpoint_dir()
    entry = read_manifest(directory).get(name)
    path = directory / f"{name}.pt"
    if entry is None or not path.exists():
        print(f"course checkpoint '{name}' is not available ({path} or its manifest entry is missing); "
              f"continuing with the model trained here. Build it with: make checkpoints NAMES={name}")
        return None
    from .data.mnist import sha256_of

    found = sha256_of(path)
    if found != entry["sha256"]:
        raise CheckpointError(f"course checkpoint {path} is corrupt: sha256 {found[:12]}... does not match the "
                              f"manifest's {entry['sha256'][:12]}...; restore it (git checkout -- {path.name}) "
                              f"or rebuild it (make checkpoints NAMES={name})")
    state = read_checkpoint(path, model)
    reference = next(iter(model.state_dict().values()), None)
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state["model"].items()})
    return model.eval()


def load_model(name: str, device: str | torch.device | None = None) -> torch.nn.Module | None:
    """The shipped course checkpoint `name` as a model in eval mode: built from the recipe its manifest entry
    names (recipes.shipped_recipe: the profile's preset), loaded and moved to `device`; None, with a message,
    when it is not shipped."""
    entry = read_manifest().get(name)
    model = recipes.shipped_recipe(name, entry or {}).build()
    model = load(name, model)
    return None if model is None else (model if device is None else model.to(device))


def save(name: str, model: torch.nn.Module, info: dict, *, half: bool = True,
         directory: Path | None = None) -> Path:
    """Write `model`'s weights as course checkpoint `name` and record it in the manifest."""
    directory = directory or checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()
               for k, v in model.state_dict().items()}
    state = {"format": CHECKPOINT_FORMAT, "minigen_version": minigen.__version__,
             "model_class": type(model).__name__, "config": model_config(model),
             "step": int(info.get("steps", 0)), "model": weights}
    path = directory / f"{name}.pt"
    torch.save(state, path)
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size / 2**20:.1f} MB; course checkpoints must stay under "
                         f"{MAX_BYTES / 2**20:.0f} MB (use half=True or a smaller preset)")
    from .data.mnist import sha256_of
    from .results import machine

    manifest = read_manifest(directory)
    manifest[name] = {"file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size,
                      "command": f"make checkpoints NAMES={name}", "machine": machine(),
                      "minigen_version": minigen.__version__, "date": time.strftime("%Y-%m-%d"), **info}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def build(name: str) -> Path:
    """Run checkpoint recipe `name` (the gpu recipe on a GPU; on a CPU the cpu recipe run longer where
    recipes.CPU_CHECKPOINT_STEPS has one) and save its checkpoint."""
    if name not in RECIPES:
        raise KeyError(f"no recipe named {name!r}; known: {sorted(RECIPES)}")
    start = time.time()
    model, info = RECIPES[name]()
    info = {"minutes": round((time.time() - start) / 60, 1), **info}
    if int(os.environ.get("RANK", 0)) > 0:  # under torchrun (make checkpoints NPROC=N) rank 0 alone writes
        return checkpoint_dir() / f"{name}.pt"
    return save(name, model, info, half=info.pop("half", True))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build the course checkpoints (the gpu recipes on a GPU; on a CPU "
                                                 "the cpu recipes run longer where recipes.CPU_CHECKPOINT_STEPS says)")
    parser.add_argument("command", choices=["build", "list"])
    parser.add_argument("names", nargs="*", help="recipes to build (default: all)")
    args = parser.parse_args(argv)
    if args.command == "list":
        manifest = read_manifest()
        for name in sorted(RECIPES):
            r = (recipes.shipped_recipe(name, manifest[name]) if name in manifest
                 else recipes.checkpoint_recipe(name))
            print(f"{name:12s} {'shipped' if name in manifest else 'not built':10s} recipe({name!r}, "
                  f"{r.profile!r}): {r.preset}, {r.train.steps} steps of batch {r.train.batch_size}")
        return
    for name in args.names or sorted(RECIPES):
        print(f"built {build(name)}")


if __name__ == "__main__":
    main()
