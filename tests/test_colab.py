"""The Colab path: one repository address, and the setup cell run as Colab runs it.

On Colab the first code cell of every notebook clones the course and installs it. Nothing else in CI runs that
branch, so a broken clone command would only show on a student's Colab. Here the cell runs for real in an
IPython shell with a fake `google.colab` module, against a bare clone of this repository as the address:
`git clone`, then `%pip install -e` (resolved against this environment with pip's --dry-run, so the test needs no
network and leaves the installed minigen alone), then `import minigen`, which must come from the clone.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("course_table", ROOT / "scripts" / "course_table.py")
course_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course_table)


def first_code_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def test_the_address_lives_in_pyproject_and_every_setup_cell_and_badge_uses_it():
    repo = course_table.repository()
    assert repo.startswith("https://github.com/"), repo
    for path in course_table.notebooks():
        assert first_code_cell(path) == course_table.setup_cell(), (
            f"{path.name}: its setup cell differs from scripts/course_table.py's SETUP_CELL; "
            f"run `python scripts/course_table.py repo {repo}`")
    readme = (ROOT / "README.md").read_text()
    prefix = course_table.colab_prefix()
    for path in course_table.notebooks():
        assert f"]({prefix}{path.name})" in readme, f"README's Colab badge for {path.name} is not {prefix}..."


def test_colab_prefix_reads_github_addresses_only():
    assert course_table.colab_prefix("https://github.com/you/minigen.git") == \
        "https://colab.research.google.com/github/you/minigen/blob/main/notebooks/"
    assert course_table.colab_prefix("https://gitlab.com/you/minigen") is None


COLAB = """
import sys, types
# A fresh Colab runtime has no minigen: drop this environment's editable install from the import system.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
sys.modules["google.colab"] = types.ModuleType("google.colab")
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
result = shell.run_cell(sys.stdin.read())
result.raise_error()
print("last shell command exited with", shell.user_ns.get("_exit_code"))  # the cell's %pip
import minigen
print("minigen from", minigen.__file__)
"""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_setup_cell_clones_installs_and_imports_minigen_as_on_colab(tmp_path):
    bare = tmp_path / "minigen.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(bare)], check=True)
    course_dir = tmp_path / "content" / "minigen"
    env = {**os.environ, "MINIGEN_REPO": bare.as_uri(), "MINIGEN_HOME": str(course_dir),
           "PIP_DRY_RUN": "1",              # resolve the editable install for real, install nothing
           "PIP_NO_BUILD_ISOLATION": "0",   # pip's inverted env flag: build with this env's setuptools, offline
           "PIP_NO_INDEX": "1", "MINIGEN_PROFILE": "ci"}
    done = subprocess.run([sys.executable, "-c", COLAB], input=course_table.setup_cell(), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (course_dir / "minigen" / "__init__.py").exists(), "git clone did not fetch the course"
    assert "last shell command exited with 0" in done.stdout, done.stdout + done.stderr
    assert f"minigen from {course_dir / 'minigen' / '__init__.py'}" in done.stdout, done.stdout
    assert "CPU:" in done.stdout or "GPU:" in done.stdout, done.stdout  # minigen.setup() ran and said so
