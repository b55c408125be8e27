"""pyproject.toml and environment.yml list the same dependencies; every module imports on its own."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def names(requirements) -> set[str]:
    return {re.split(r"[<>=!~ \[]", r.strip(), maxsplit=1)[0].lower() for r in requirements}


def conda_names() -> set[str]:
    found, in_deps = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
        elif in_deps and re.match(r"\s+- [A-Za-z]", line) and not line.rstrip().endswith(":"):
            found.add(line.split("- ", 1)[1])
    return names(found) - {"python", "pip"}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= names(extra)
    assert conda_names() == wanted


@pytest.mark.parametrize("module", ["minigen", "minigen.data", "minigen.train", "minigen.viz", "minigen.profile",
                                    "minigen.checkpoints", "minigen.results", "minigen.kernels",
                                    "minigen.kernels.compile_check", "minigen.bench", "minigen.exercises.kernels",
                                    "minigen.nn", "minigen.diffusion", "minigen.metrics", "minigen.patches",
                                    "minigen.models.autoencoder", "minigen.models.mae", "minigen.models.vae",
                                    "minigen.models.flow", "minigen.models.unet"])
def test_module_imports_alone(module):
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT)
