"""The import arrows of DESIGN section 1, read from the source: notebooks -> recipes -> models -> nn -> kernels.

Every module of minigen/ is parsed with `ast`; every `import` and `from ... import` counts, at top level or inside
a function, with relative imports resolved. The rules, by the importing module's layer:

    kernels      imports only minigen.kernels
    patches      imports no other minigen module (data layout, below everything)
    threads      imports no other minigen module (torch's CPU pool: any loop may call threads.adapt())
    nn           imports only kernels and patches
    diffusion    imports only nn, patches, kernels, threads (model-agnostic)
    a model file imports only nn, patches, kernels, diffusion, threads; never another model file, recipes or a side library
    side libraries (data, viz, metrics, train, results, profile, edits, text2image) import no model file and not
                 recipes
    nothing imports from notebooks/
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minigen"
SIDE = ("data", "viz", "metrics", "train", "results", "profile", "edits", "text2image")
ARROW = "notebooks -> recipes -> models -> nn -> kernels"
ALLOWED = {  # layer -> the layers it may import from inside minigen (None: any but the forbidden below)
    "kernels": {"kernels"},
    "patches": set(),
    "threads": set(),
    "nn": {"kernels", "patches"},
    "diffusion": {"nn", "patches", "kernels", "threads"},
    "model file": {"nn", "patches", "kernels", "diffusion", "threads"},
}
FORBIDDEN = {"side library": {"model file", "models package", "recipes"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "minigen":
        return "notebooks" if parts[0] == "notebooks" else "outside"
    if len(parts) == 1:
        return "package root"
    head = parts[1]
    if head == "models":
        return "model file" if len(parts) > 2 else "models package"
    if head in SIDE:
        return "side library"
    return head  # kernels, nn, patches, threads, diffusion, recipes, checkpoints, bench, exercises, ...


def imports(source: str, module: str, is_package: bool, known: set[str]):
    """(line, imported module) for every import statement in `source`, relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:  # `from minigen import metrics` imports the module minigen.metrics
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in known else target


def violation(importer: str, target: str) -> str | None:
    """Why `importer` may not import `target`, or None when the arrow points the right way."""
    source, dest = layer(importer), layer(target)
    if dest == "notebooks":
        return "no module imports from a notebook"
    if dest in ("outside", "package root") and source not in ALLOWED:
        return None
    if dest == "outside":
        return None
    if source == "model file" and dest == "model file" and target != importer:
        return "a model file imports no other model file"
    if source in ALLOWED and dest not in ALLOWED[source] and target != importer:
        who = "a model file" if source == "model file" else f"minigen.{source}"
        may = ", ".join(f"minigen.{name}" for name in sorted(ALLOWED[source])) or "no other minigen module"
        return f"{who} may import only {may}"
    if dest in FORBIDDEN.get(source, ()):
        return f"a {source} ({', '.join(SIDE)}) imports no model file and not recipes"
    return None


def check(path: Path, source: str, module: str, known: set[str]) -> list[str]:
    found = []
    for line, target in sorted(set(imports(source, module, path.name == "__init__.py", known))):
        why = violation(module, target)
        if why:
            rel = path.relative_to(ROOT) if path.is_absolute() else path
            found.append(f"{rel}:{line}: {module} ({layer(module)}) imports {target} ({layer(target)}): "
                         f"an arrow against {ARROW}; {why}")
    return found


def test_every_import_in_minigen_points_down_the_layers():
    modules = all_modules()
    known = set(modules)
    assert {"minigen.recipes", "minigen.models.vae", "minigen.nn", "minigen.kernels"} <= known
    problems = [msg for name, path in modules.items() for msg in check(path, path.read_text(), name, known)]
    assert not problems, "\n".join(problems)


KNOWN = {"minigen", "minigen.nn", "minigen.train", "minigen.metrics", "minigen.models", "minigen.models.vae",
         "minigen.models.unet", "minigen.recipes", "minigen.kernels", "minigen.kernels.norm", "minigen.diffusion",
         "minigen.data", "minigen.data.mnist", "minigen.patches"}


@pytest.mark.parametrize("module, source, bad", [
    ("minigen.models.vae", "def f():\n    from minigen.train import EpochSampler\n", "minigen.train"),
    ("minigen.models.vae", "def f():\n    from ..metrics import iwae_bound\n", "minigen.metrics"),
    ("minigen.models.vae", "from . import unet\n", "minigen.models.unet"),
    ("minigen.models.vae", "import minigen.recipes\n", "minigen.recipes"),
    ("minigen.nn", "from .models.vae import VAE\n", "minigen.models.vae"),
    ("minigen.nn", "from minigen import recipes\n", "minigen.recipes"),
    ("minigen.kernels.norm", "from .. import nn\n", "minigen.nn"),
    ("minigen.metrics", "def f():\n    from minigen.models.unet import UNet\n", "minigen.models.unet"),
    ("minigen.train", "from .recipes import recipe\n", "minigen.recipes"),
    ("minigen.data.mnist", "from ..models import vae\n", "minigen.models.vae"),
    ("minigen.recipes", "import notebooks.helpers\n", "notebooks.helpers"),
])
def test_the_checker_catches_upward_arrows_inside_functions_and_relative(module, source, bad):
    path = Path(*module.split(".")).with_suffix(".py")
    problems = check(path, source, module, KNOWN)
    assert len(problems) == 1 and f"imports {bad} " in problems[0] and str(path) in problems[0], problems


@pytest.mark.parametrize("module, source", [
    ("minigen.models.vae", "from ..nn import check_images\nimport torch\nimport math\n"),
    ("minigen.models.unet", "def f():\n    from minigen.diffusion import q_sample\n"),
    ("minigen.nn", "from .kernels import groupnorm_silu\nfrom .patches import patchify\n"),
    ("minigen.kernels.norm", "from ._dispatch import triton\n"),
    ("minigen.metrics", "from minigen.data.mnist import load_mnist\n"),
    ("minigen.recipes", "from minigen.models.vae import VAE\nfrom minigen.train import Trainer\n"),
])
def test_the_checker_lets_downward_arrows_pass(module, source):
    known = KNOWN | {"minigen.kernels._dispatch"}
    assert check(Path(*module.split(".")).with_suffix(".py"), source, module, known) == []
