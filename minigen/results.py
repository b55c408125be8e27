"""Measured figures go into docs/results.md by code, never by hand (DESIGN §8).

A notebook calls `record("02_vae", "test NLL (IWAE k=500), nats", 91.3, baseline=86.76, baseline_label=...)`.
The row is stored in docs/results.json under the active profile with the machine it ran on, and
docs/results.md is re-rendered from that file. Under the `ci` profile nothing is written (CI and `make test`
would otherwise rewrite the table with smoke-test numbers); set MINIGEN_RECORD=1, or pass profile="ci"
explicitly (as scripts/course_table.py does for its timings), to write ci rows.
"""
import contextlib
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import torch

from . import profile as profiles

HEADER = """# Measured results

Every figure here was written by code in the repository (`minigen.results.record`, called by the notebooks
and scripts), with the profile and the machine that produced it. Regenerate by re-running the notebook
(`make execute`). Do not edit by hand: edit docs/results.json's producers instead.
"""


def results_path() -> Path:
    return Path(__file__).resolve().parents[1] / "docs" / "results.json"


def machine() -> str:
    """A short description of this machine: the GPU's name, or the CPU and its core count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(notebook: str, metric: str, value: float, *, baseline: float | None = None,
           baseline_label: str = "", unit: str = "", path: Path | None = None,
           profile: str | None = None) -> dict:
    """Store one measured figure for the active profile (or `profile`, for scripts that have no profile,
    e.g. "full") and re-render docs/results.md."""
    if not math.isfinite(value):
        raise ValueError(f"{notebook}: {metric} is {value}; a measured figure must be a finite number")
    name = profile or profiles.current().name
    row = {"notebook": notebook, "metric": metric, "profile": name, "value": float(value),
           "baseline": None if baseline is None else float(baseline), "baseline_label": baseline_label,
           "unit": unit, "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    path = path or results_path()
    implicit_ci = profile is None and name == "ci" and os.environ.get("MINIGEN_RECORD") != "1"
    if implicit_ci or not path.parent.is_dir():
        return row
    with _locked(path.with_suffix(".lock")):  # notebooks may run side by side (make execute -j)
        rows = json.loads(path.read_text()) if path.exists() else []
        rows = [r for r in rows if (r["notebook"], r["metric"], r["profile"]) != (notebook, metric, name)]
        rows.append(row)
        rows.sort(key=lambda r: (r["notebook"], r["metric"], r["profile"]))
        path.write_text(json.dumps(rows, indent=1) + "\n")
        path.with_suffix(".md").write_text(render(rows))
    return row


@contextlib.contextmanager
def _locked(lock: Path, timeout: float = 60.0, stale: float = 300.0):
    """Hold `lock` (a file created exclusively, which works on Linux, macOS and Windows alike) while inside.

    A lock left by a crashed writer is taken over once it is `stale` seconds old."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - lock.stat().st_mtime > stale:
                    lock.unlink()
                    continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lock} is held by another writer; delete it if no notebook is running")
            time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


# The course's generators on one yardstick (notebook 00's FD on classifier features, beside the real-vs-real floor
# at the same n), read from the recorded rows: (family, notebook, FD metric, likelihood metric or None). A metric
# matches exactly, or as a prefix (its k or n may follow in the name); among several FD rows the one at the profile's
# n_eval wins (a name without "(n=...)" counts as n_eval), so a notebook may also record a sweep at a smaller n.
# The other columns are found by name, so a notebook fills them by recording under these names (a cell stays blank
# until it does):
#   classifier score, precision, recall: the FD metric's name with its leading "FD" replaced by "classifier score",
#       "precision" or "recall" ("FD of samples (n=5000)" -> "precision of samples (n=5000)"): the same samples;
#   TRAIN_METRIC (minutes of training for the model that drew them) and SPEED_METRIC (samples drawn per second);
#   WALL_METRIC (the whole notebook, recorded by scripts/course_table.py).
# A notebook with several generators names its own: an optional fifth element maps any of "classifier score",
# "precision", "recall", "training", "speed" to the metric (or prefix) to read instead.
FAMILIES = [
    ("autoencoder + fitted Gaussian", "01_autoencoder", "FD of AE decodes, z ~ fitted Gaussian", None),
    ("VAE", "02_vae", "FD of samples", "test NLL bound, IWAE"),
    # the shipped VAE checkpoint, scored in notebook 02's run beside the row above (its training minutes are in the
    # manifest, which names the recipe and machine)
    ("VAE, course checkpoint", "02_vae", "FD of samples, course checkpoint", "course checkpoint: test NLL bound",
     {"training": None, "speed": "sampling speed, samples/s, course checkpoint"}),
    ("normalizing flow, T = 1", "03_flow", "FD of samples, T = 1.0", "test bits/dim"),
    ("normalizing flow, course checkpoint, T = 1", "03_flow", "FD of samples, T = 1.0, course checkpoint",
     "course checkpoint: test bits/dim",
     {"training": None, "speed": "sampling speed, samples/s, course checkpoint"}),
    ("diffusion, guided DDIM", "04_diffusion", "FD of samples, DDIM", None),
    # the shipped checkpoint (the gpu recipe), sampled and scored in the same run as the row above; its training
    # ran on another machine (data/checkpoints/manifest.json says which), so no training minutes here
    ("diffusion, course checkpoint (gpu recipe), guided DDIM", "04_diffusion", "FD of samples, course checkpoint",
     None, {"training": None, "speed": "sampling speed, samples/s, course checkpoint"}),
    ("GAN (DCGAN + R1), unconditional", "05_gan", "FD of samples, unconditional GAN", None,
     {"training": "training time, minutes, unconditional GAN",
      "speed": "sampling speed, samples/s, unconditional GAN"}),
    ("GAN, class-conditional (projection)", "05_gan", "FD of samples, conditional GAN", None,
     {"training": "training time, minutes, conditional GAN", "speed": "sampling speed, samples/s, conditional GAN"}),
    ("VAE-GAN (hybrid)", "05_gan", "FD of samples, VAE-GAN", None,
     {"training": "training time, minutes, VAE-GAN", "speed": "sampling speed, samples/s, VAE-GAN"}),
    ("latent DiT, noise prediction, guided DDIM", "06_latent_dit", "FD of samples, DiT noise prediction", None,
     {"training": "training time, minutes, DiT noise prediction",
      "speed": "sampling speed, samples/s, DiT noise prediction"}),
    ("latent DiT, flow matching, guided Heun", "06_latent_dit", "FD of samples, DiT flow matching", None,
     {"training": "training time, minutes, DiT flow matching",
      "speed": "sampling speed, samples/s, DiT flow matching"}),
]
COMPANIONS = ("classifier score", "precision", "recall")
TRAIN_METRIC, SPEED_METRIC = "training time, minutes", "sampling speed, samples/s"
WALL_METRIC = "wall time, whole notebook"


def _n(metric: str, profile: str) -> int:
    """The sample count in a metric's name ("... (n=500)"), else the profile's n_eval."""
    n = re.search(r"\(n=(\d+)\)", metric)
    return int(n.group(1)) if n else profiles.PROFILES[profile].n_eval


def _find(rows, notebook, metric, profile):
    """The row of `notebook` at `profile` whose metric is `metric`, or else starts with it; among several prefix
    matches, the one at the profile's n_eval."""
    if metric is None:
        return None
    hits = [r for r in rows if r["notebook"] == notebook and r["profile"] == profile]
    exact = [r for r in hits if r["metric"] == metric]
    if exact:
        return exact[0]
    prefix = [r for r in hits if r["metric"].startswith(metric)]
    at_n_eval = [r for r in prefix if _n(r["metric"], profile) == profiles.PROFILES[profile].n_eval]
    return (at_n_eval or prefix or [None])[0]


def _companion(fd_metric: str, name: str) -> str:
    """"FD of samples (n=5000)" -> "precision of samples (n=5000)": the name a companion figure is recorded under."""
    return name + fd_metric[len("FD"):] if fd_metric.startswith("FD") else f"{name}, {fd_metric}"


def family_table(rows: list[dict] | None = None) -> str:
    """A markdown table, one row per model family and profile measured: FD at n beside the floor, the classifier
    score and precision/recall of the same samples, the likelihood where the family has one, training minutes,
    sampling speed and the notebook's whole wall time, with the machine and date of the FD. A figure the notebook
    has not recorded is left blank."""
    if rows is None:
        path = results_path()
        rows = json.loads(path.read_text()) if path.exists() else []
    lines = ["| family | profile | FD | floor | n | classifier score | precision / recall | likelihood | "
             "training, min | samples/s | notebook wall time | machine, date |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def value(row, fmt="{:.4g}"):
        return "" if row is None else fmt.format(row["value"])

    for family, notebook, fd_metric, like_metric, *own in FAMILIES:
        own = own[0] if own else {}
        for profile in ("cpu", "gpu"):  # the ci profile's smoke-test numbers measure nothing
            fd = _find(rows, notebook, fd_metric, profile)
            if fd is None:
                continue
            score, precision, recall = (_find(rows, notebook, own.get(name, _companion(fd["metric"], name)), profile)
                                        for name in COMPANIONS)
            pr = "" if precision is None and recall is None else \
                f"{value(precision, '{:.3f}')} / {value(recall, '{:.3f}')}"
            like = _find(rows, notebook, like_metric, profile)
            like = "" if like is None else f"{like['value']:.4g} {like['unit']} ({like['metric']})"
            train = _find(rows, notebook, own.get("training", TRAIN_METRIC), profile)
            speed = _find(rows, notebook, own.get("speed", SPEED_METRIC), profile)
            wall = _find(rows, notebook, WALL_METRIC, profile)
            wall = "" if wall is None else f"{wall['value']:.4g} {wall['unit']}"
            floor = "" if fd["baseline"] is None else f"{fd['baseline']:.4g}"
            lines.append(f"| {family} ({notebook[:2]}) | {profile} | {fd['value']:.4g} | {floor} | "
                         f"{_n(fd['metric'], profile)} | {value(score, '{:.3g}')} | {pr} | {like} | "
                         f"{value(train, '{:.3g}')} | {value(speed, '{:.3g}')} | {wall} | "
                         f"{fd['machine']}, {fd['date']} |")
    return "\n".join(lines)


def render(rows: list[dict]) -> str:
    lines = [HEADER, "\n## Across the course: every generator on one yardstick\n",
             "FD to real test digits on the metric classifier's features (lower is better; the floor is real vs real "
             "at the same n), with the classifier score (max 10) and precision/recall of the same samples. Rows with "
             "different n are not comparable: FD falls as n grows. A blank cell: the notebook has not recorded it.\n",
             family_table(rows)]
    for notebook in sorted({r["notebook"] for r in rows}):
        lines += [f"\n## {notebook}\n", "| metric | profile | value | baseline | machine | date |",
                  "|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["notebook"] == notebook):
            base = "" if r["baseline"] is None else f"{r['baseline']:.4g} {r['baseline_label']}".strip()
            lines.append(f"| {r['metric']} | {r['profile']} | {r['value']:.4g} {r['unit']} | {base} | "
                         f"{r['machine']} | {r['date']} |")
    return "\n".join(lines) + "\n"
