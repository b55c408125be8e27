# minigen: the two commands are `make course` and `make test`. Both install into .venv first.
#   make course [NOBROWSER=1]  install, then open the course in JupyterLab
#   make test                  install, then every unit test and every notebook under nbval (ci profile)
#   make execute [NOTEBOOKS=]  re-run notebooks in place (cpu profile, or gpu where CUDA is present),
#                              recording each one's wall time in docs/results.md and the README table
#   make checkpoints [NAMES=] [NPROC=N]  rebuild the course checkpoints by training at the gpu profile
#                              (NPROC > 1: data-parallel under torchrun, one process a GPU)
#   make slides [NOTEBOOKS=]   reveal.js lectures under docs/slides/ that run from disk with no network
#                              (fetches reveal.js and MathJax once from the npm registry into docs/slides/vendor/)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
# A venv keeps its programs in bin/ on Linux and macOS, in Scripts/ on Windows (make from Git Bash or MSYS2).
BIN := $(VENV)/$(if $(filter Windows_NT,$(OS)),Scripts,bin)
PY := $(BIN)/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.minigen-installed

NPROC ?= 1
PIP := $(PY) -m pip install --progress-bar on --disable-pip-version-check

.PHONY: course test unit nbval execute checkpoints slides install clean

$(PY):
	@echo "installing: a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# torch first and pinned (the CPU build here; a plain `torch` would pull a multi-GB CUDA build), unless a
# CUDA torch is already installed (a GPU box, or Colab, which keeps its own). The gpu extra (Triton) carries a
# platform marker: pip installs it on Linux and skips it on macOS and Windows, where Triton has no wheels.
$(STAMP): $(PY) pyproject.toml
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
		echo "keeping the installed CUDA torch"; \
	else echo "installing: $(TORCH_PIN) (about 200 MB on the first run)"; $(PIP) "$(TORCH_PIN)"; fi
	@echo "installing: minigen and its dependencies (numpy, matplotlib, jupyter, pytest, nbval, triton on Linux)"
	$(PIP) -e ".[test,gpu]"
	touch $(STAMP)

install: $(STAMP)

course: install
	$(BIN)/jupyter lab notebooks/ $(if $(NOBROWSER),--no-browser,) $(if $(filter 0,$(shell id -u)),--allow-root,)

unit: install
	MINIGEN_PROFILE=ci $(PY) -m pytest tests/

nbval: install
	MINIGEN_PROFILE=ci TRITON_INTERPRET=1 $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

test: unit nbval

execute: install
	@profile=$$($(PY) -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')"); \
	$(PY) scripts/course_table.py time --profile $$profile --inplace $(NOTEBOOKS)
	$(PY) scripts/course_table.py readme

# NPROC=N > 1 trains each checkpoint data-parallel on N processes (one a GPU; gloo on a CPU) under torchrun.
checkpoints: install
	$(if $(filter 1,$(NPROC)),$(PY),$(PY) -m torch.distributed.run --standalone --nproc_per_node $(NPROC)) \
		-m minigen.checkpoints build $(NAMES)

slides: install
	$(PY) scripts/slides.py $(NOTEBOOKS)

clean:
	rm -rf $(VENV) .pytest_cache **/__pycache__
