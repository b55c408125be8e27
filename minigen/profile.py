"""Profiles: one notebook, three budgets (DESIGN §2).

    ci   every cell runs in about a minute on a 2-core CPU; proves the notebook works, samples may be rough
    cpu  a few minutes on a laptop CPU; samples are recognisable
    gpu  about ten minutes on a Colab T4; best quality

Selection, first match wins: the MINIGEN_PROFILE environment variable; a CI or pytest/nbval run -> ci;
CUDA available -> gpu; otherwise cpu.

A notebook reads shared sizes from the table (`P.n_eval`) and its own with `P.pick(ci=..., cpu=..., gpu=...)`,
so the three budgets of every experiment stand side by side where the experiment is.
"""
import os
from dataclasses import dataclass

import torch

NAMES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class Profile:
    name: str
    n_eval: int        # samples per side in a Frechet distance / precision-recall evaluation
    batch_size: int    # default training batch
    n_show: int        # images in a sample grid
    fps: int           # frames per second of animations

    def pick(self, *, ci, cpu, gpu):
        """The value for this profile, e.g. `steps = P.pick(ci=50, cpu=3000, gpu=20000)`."""
        return {"ci": ci, "cpu": cpu, "gpu": gpu}[self.name]

    def __str__(self) -> str:
        return f"profile '{self.name}' ({describe(self.name)})"


PROFILES = {
    # ci: small evaluations keep nbval under a minute; FD on 500 samples is biased high but still ranks models
    "ci": Profile("ci", n_eval=500, batch_size=64, n_show=16, fps=8),
    # cpu: 5k per side puts the FD floor within a few percent of its 10k value at a fraction of the cost
    "cpu": Profile("cpu", n_eval=5000, batch_size=128, n_show=64, fps=12),
    # gpu: 10k per side, the standard for MNIST-scale Frechet distances
    "gpu": Profile("gpu", n_eval=10000, batch_size=256, n_show=64, fps=12),
}


def describe(name: str) -> str:
    return {"ci": "smoke test, ~1 min on 2 CPU cores", "cpu": "a few minutes on a laptop CPU",
            "gpu": "full quality, ~10 min on a T4"}[name]


def select(environ=None, cuda_available=None) -> str:
    """Which profile applies: MINIGEN_PROFILE, then CI/pytest -> ci, then CUDA -> gpu, else cpu."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("MINIGEN_PROFILE", "").strip().lower()
    if chosen:
        if chosen not in PROFILES:
            raise ValueError(f"MINIGEN_PROFILE={chosen!r} is not a profile; choose one of {', '.join(NAMES)}")
        return chosen
    if environ.get("CI", "").lower() in ("1", "true", "yes") or "PYTEST_CURRENT_TEST" in environ:
        return "ci"
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    return "gpu" if cuda_available else "cpu"


def current() -> Profile:
    """The active profile (re-read each call, so changing MINIGEN_PROFILE in a notebook takes effect)."""
    return PROFILES[select()]
