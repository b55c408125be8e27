"""pyproject.toml and environment.yml list the same dependencies; every module imports on its own."""
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def specs(requirements) -> dict[str, str]:
    """{name: version specifier and marker}, e.g. {"triton": ">=3.9,<3.10; platform_system == 'Linux'"}."""
    found = {}
    for r in requirements:
        name = re.split(r"[<>=!~ \[;]", r.strip(), maxsplit=1)[0].lower()
        found[name] = re.sub(r"\s+", "", r.strip()[len(name):]).replace('"', "'")
    return found


def pyproject_specs() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = specs(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        found |= specs(extra)
    return found


def test_pins_agree_across_pyproject_environment_and_makefile():
    """The same version range everywhere; torch's exact pin (Makefile, environment.yml) inside pyproject's range."""
    deps = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1].splitlines()
    conda = specs(line.split("- ", 1)[1] for line in deps if re.match(r"\s+- [A-Za-z]", line)
                  and not line.rstrip().endswith(":"))
    conda.pop("python"), conda.pop("pip")
    ours = pyproject_specs()
    torch_pin = re.search(r"^TORCH_PIN := torch==(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert conda.pop("torch") == f"=={torch_pin}"
    low = re.fullmatch(r">=([\d.]+)", ours.pop("torch")).group(1)
    assert tuple(map(int, torch_pin.split("."))) >= tuple(map(int, low.split("."))), (torch_pin, low)
    assert conda == ours
    assert ours["triton"].endswith("platform_system=='Linux'"), "Triton has wheels for Linux only"


def test_requires_python_is_true():
    """The tests use tomllib (3.11+); requires-python must not promise less."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].startswith(">=3.11")
    assert re.search(r"- python>=3\.11", (ROOT / "environment.yml").read_text())


def test_results_needs_no_posix_only_module():
    source = (ROOT / "minigen" / "results.py").read_text()
    assert not re.search(r"^import (fcntl|msvcrt)", source, re.M)


ALONE = ["minigen", "minigen.data", "minigen.train", "minigen.viz", "minigen.profile", "minigen.checkpoints",
         "minigen.results", "minigen.kernels", "minigen.kernels.compile_check", "minigen.bench",
         "minigen.exercises.kernels", "minigen.nn", "minigen.diffusion", "minigen.metrics", "minigen.patches",
         "minigen.models.autoencoder", "minigen.models.mae", "minigen.models.vae", "minigen.models.flow",
         "minigen.models.unet", "minigen.models.dit", "minigen.models.video", "minigen.models.frame_judge",
         "minigen.recipes", "minigen.threads", "minigen.bench_cpu"]


# One interpreter imports the third-party libraries once, then forks a child per module that imports it with no other
# minigen module loaded: the same check as a fresh interpreter each (minigen's own imports are what can be missing),
# without paying ~3 s of `import torch` 26 times. Where fork is not safe or not there (macOS, Windows), one fresh
# interpreter per module, two at a time.
FORK_EACH = """
import os, sys, traceback
import matplotlib, numpy, torch, tqdm  # third-party, once; no minigen module is imported here
failed = []
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(module)
        except BaseException:
            print(module, traceback.format_exc().strip().splitlines()[-1], file=sys.stderr)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1]:
        failed.append(module)
print(" ".join(failed))
"""


def test_every_module_imports_alone():
    """Each module imports with no other minigen module loaded before it (no import order hides a missing import)."""
    if sys.platform == "linux":
        run = subprocess.run([sys.executable, "-c", FORK_EACH, *ALONE], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        failed = [(module, [line for line in run.stderr.splitlines() if line.startswith(module + " ")])
                  for module in run.stdout.split()]
    else:
        def alone(module):
            run = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
            return module, run.returncode, run.stderr.strip().splitlines()[-1:] if run.returncode else []

        with ThreadPoolExecutor(max_workers=2) as pool:
            failed = [(module, last) for module, code, last in pool.map(alone, ALONE) if code]
    assert not failed, f"modules that do not import on their own: {failed}"