"""The README's table of notebooks, with wall times measured by code, never typed in (DESIGN §8).

    python scripts/course_table.py time --profile ci     # run every notebook, record its wall time
    python scripts/course_table.py time --profile cpu --inplace 00 03   # re-run these in place (make execute)
    python scripts/course_table.py readme                # rewrite the table in README.md
    python scripts/course_table.py repo URL              # point the course at a fork: pyproject, cells, badges

The course's repository address lives in one place, pyproject.toml's [project.urls] Repository. `repo URL`
writes it there and re-renders from it the first code cell of every notebook (the setup cell, which clones
the address on Colab) and the README's Colab badges; tests/test_colab.py checks that all three agree and runs
the setup cell as Colab would, against a local clone.

`time` executes each notebook with nbclient under the given profile (outputs are discarded, the committed
notebook is untouched) and records "wall time" for it in docs/results.json with this machine's name.
`readme` renders the table between the <!-- notebook-table --> markers from the notebooks' titles, the
one-line summaries below, and the recorded times.
"""
import argparse
import json
import os
import re
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigen.results import record, results_path  # noqa: E402

MARK = "<!-- notebook-table -->"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BUILDS = {
    "00": "images and videos as tensors; patchify and tubelets (ViT, ViViT); the cost of attention on a minute "
          "of video; every data set; linear probes on patch means; the FD yardstick",
    "01": "a conv autoencoder vs PCA; a 2-D code map and decoder walk; why random codes decode badly (FD); "
          "a masked autoencoder (MAE) vs the mean patch",
    "02": "a VAE from scratch (reparameterization, ELBO); IWAE bound in nats vs Burda et al.; samples, "
          "interpolations, latent sliders; beta rate-distortion sweep",
    "03": "affine coupling flows on 2-D densities, then a multi-scale Glow-style flow on MNIST; exact bits/dim",
    "04": "forward noising and schedules; a U-Net denoiser; DDPM and DDIM sampling; classifier-free guidance; "
          "inpainting and SDEdit",
    "05": "a GAN from scratch in 2-D (the judge's surface, saturating vs non-saturating, mode collapse and "
          "minibatch std); a DCGAN with R1, unconditional and class-conditional; truncation; VAE-GAN, Flow-GAN, "
          "Diffusion-GAN, each measured",
    "06": "a KL autoencoder's latent space; a DiT from scratch (patches, adaLN-Zero); one network trained by noise "
          "prediction and by flow matching; FD against steps (DDIM, Euler, Heun); reflow; the conditioning ablation",
    "07": "online softmax on tiles; a FlashAttention-2 kernel (forward and backward) and fused norms in Triton; "
          "the benchmark against PyTorch",
    "08": "an attribute judge on cartoon faces; attribute vectors in a VAE, a GAN's z and a diffusion model's "
          "DDIM-inverted noise, measured by flip and preservation rates vs a random direction; slerp; MNIST "
          "thickness and slant vectors; an explorer",
    "09": "tubelets and the cost of attention over a clip; full vs factorized (time, then space) attention, counted "
          "and timed; temporal attention read in place by strides (a Triton kernel); a video DiT conditioned on the "
          "first frame and the actions; a frame judge (shape, colour, centre, velocity); factorized vs full",
    "10": "scenes whose captions are provably true; a tokenizer; CLIP from scratch (symmetric contrastive loss); "
          "zero-shot attributes by prompt ensembles; retrieval; the CLIP-score band; a captioner (teacher forcing, "
          "greedy and beam); recaptioning a carelessly captioned set",
    "11": "a caption DiT with cross-attention to a frozen CLIP text tower, flow matching and classifier-free guidance; "
          "a prompt box; a scene judge (GenEval-style exact accuracy); a guidance sweep of CLIP score, accuracy and "
          "diversity; careless vs recaptioned training; detailed vs short prompts; held-out pairs; attention maps",
}


SETUP_CELL = """\
import os, sys
if "google.colab" in sys.modules:  # on Colab: fetch the course and install minigen (Colab keeps its own torch)
    repo = os.environ.get("MINIGEN_REPO", "{repo}")  # a fork: README, "Colab"
    course_dir = os.environ.get("MINIGEN_HOME", "/content/minigen")
    if not os.path.isdir(course_dir):
        !git clone -q --depth 1 {{repo}} {{course_dir}}
    %pip install -q -e {{course_dir}}
    sys.path.insert(0, course_dir)
import minigen
P, device = minigen.setup(seed=0)"""


def repository() -> str:
    """The course's repository address: pyproject.toml's [project.urls] Repository, its one home."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def setup_cell(repo: str | None = None) -> str:
    """The source of every notebook's first code cell, cloning `repo` (default: repository()) on Colab."""
    return SETUP_CELL.format(repo=repo or repository())


def colab_prefix(repo: str | None = None) -> str | None:
    """Colab's address for the notebooks of a GitHub repository (Colab opens GitHub notebooks only)."""
    found = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", repo or repository())
    return found and f"https://colab.research.google.com/github/{found[1]}/{found[2]}/blob/main/notebooks/"


def rewrite_setup_cells() -> None:
    """Make every notebook's first code cell setup_cell(), keeping its outputs."""
    for path in notebooks():
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        cell["source"] = setup_cell().splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def set_repository(url: str) -> None:
    """Point the course at `url`: pyproject.toml, then the setup cells and the README's badges."""
    if not re.fullmatch(r"(https://|git@|file://)\S+", url):
        raise SystemExit(f"not a repository address: {url!r} (expected https://github.com/you/minigen)")
    path = ROOT / "pyproject.toml"
    text, count = re.subn(r'(?m)^Repository = ".*"$', f'Repository = "{url}"', path.read_text())
    if count != 1:
        raise SystemExit(f"{path} has no [project.urls] Repository line to rewrite")
    path.write_text(text)
    rewrite_setup_cells()
    rewrite_readme()
    print(f"the course now clones {url}: pyproject.toml, {len(notebooks())} setup cells and README.md rewritten")


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The course's notebooks in order, or those whose file name starts with one of `names` (e.g. "04")."""
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if names:
        found = [next(p for p in found if p.name.startswith(name)) for name in names]
    return found


def title(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    first = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"]).splitlines()[0]
    return first.lstrip("# ").strip()


def execute(path: Path, inplace: bool) -> None:
    """Run every cell of the notebook at `path` in a fresh kernel (nbclient, as `jupyter nbconvert --execute`
    does, with the notebook's folder as the working directory); with `inplace`, write the outputs back."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    if inplace:
        nbformat.write(nb, path)


def time_all(profile: str, inplace: bool, names: list[str]) -> None:
    """Execute each notebook under `profile` and record its wall time. With `inplace` the executed notebook
    replaces the committed one (what `make execute` does); otherwise its outputs are thrown away."""
    os.environ["MINIGEN_PROFILE"] = profile  # the kernel inherits this process's environment
    if profile == "ci":
        os.environ["MINIGEN_RECORD"] = "1"  # results.record skips ci figures unless asked
    if profile != "gpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # the kernels notebook runs its Triton cells in the interpreter
    for path in notebooks(names):
        start = time.perf_counter()
        execute(path, inplace)
        seconds = time.perf_counter() - start
        record(path.stem, "wall time, whole notebook", seconds, unit="s", profile=profile)
        print(f"{path.name}: {seconds:.0f} s at the {profile} profile", flush=True)


def recorded_times() -> dict:
    rows = json.loads(results_path().read_text()) if results_path().exists() else []
    return {(r["notebook"], r["profile"]): r["value"] for r in rows if r["metric"] == "wall time, whole notebook"}


def render_table() -> str:
    times = recorded_times()

    def cell(stem, profile):
        seconds = times.get((stem, profile))
        return "not measured" if seconds is None else f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"

    prefix = colab_prefix()
    rows = ["| # | notebook | what you build | ci | cpu | gpu | Colab |", "|---|---|---|---|---|---|---|"]
    for path in notebooks():
        stem, number = path.stem, path.stem[:2]
        link = f"[{title(path)}](notebooks/{path.name})"
        colab = f"[![Open in Colab]({BADGE})]({prefix}{path.name})" if prefix else "GitHub only"
        rows.append(f"| {number} | {link} | {BUILDS.get(number, '')} | {cell(stem, 'ci')} | {cell(stem, 'cpu')} | "
                    f"{cell(stem, 'gpu')} | {colab} |")
    return "\n".join(rows)


def rewrite_readme() -> None:
    readme = ROOT / "README.md"
    head, _, rest = readme.read_text().partition(MARK + "\n")
    tail = rest.splitlines(keepends=True)
    while tail and tail[0].startswith("|"):  # the previous table's rows
        tail.pop(0)
    readme.write_text(f"{head}{MARK}\n{render_table()}\n{''.join(tail)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    timing = sub.add_parser("time")
    timing.add_argument("--profile", choices=["ci", "cpu", "gpu"], required=True)
    timing.add_argument("--inplace", action="store_true", help="keep the executed notebook (make execute)")
    timing.add_argument("notebooks", nargs="*", help="notebook numbers, e.g. 00 04 (default: all, in order)")
    sub.add_parser("readme")
    sub.add_parser("repo").add_argument("url", help="the repository the setup cells clone on Colab")
    args = parser.parse_args()
    if args.command == "time":
        time_all(args.profile, args.inplace, args.notebooks)
    elif args.command == "repo":
        set_repository(args.url)
    else:
        rewrite_readme()


if __name__ == "__main__":
    main()
