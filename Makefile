# minigen: the two commands are `make course` and `make test`. Both install into .venv first.
#   make course [NOBROWSER=1]  install, then open the course in JupyterLab
#   make test                  install, then every unit test and every notebook under nbval (ci profile)
#   make execute [NOTEBOOKS=]  re-run notebooks in place (cpu profile, or gpu where CUDA is present),
#                              recording each one's wall time in docs/results.md and the README table
#   make checkpoints [NAMES=]  rebuild the course checkpoints by training at the gpu profile
#   make slides                turn the notebooks into reveal.js lectures under docs/slides/
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.minigen-installed

.PHONY: course test unit nbval execute checkpoints slides install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first and pinned (the CPU build here; a plain `torch` would pull a multi-GB CUDA build), unless a
# CUDA torch is already installed (a GPU box, or Colab, which keeps its own).
$(STAMP): $(PY) pyproject.toml
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
		echo "keeping the installed CUDA torch"; else $(PY) -m pip install -q "$(TORCH_PIN)"; fi
	$(PY) -m pip install -q -e ".[test,gpu]"
	touch $(STAMP)

install: $(STAMP)

course: install
	$(VENV)/bin/jupyter lab notebooks/ $(if $(NOBROWSER),--no-browser,) $(if $(filter 0,$(shell id -u)),--allow-root,)

unit: install
	MINIGEN_PROFILE=ci $(PY) -m pytest tests/

nbval: install
	MINIGEN_PROFILE=ci TRITON_INTERPRET=1 $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

test: unit nbval

execute: install
	@profile=$$($(PY) -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')"); \
	$(PY) scripts/course_table.py time --profile $$profile --inplace $(NOTEBOOKS)
	$(PY) scripts/course_table.py readme

checkpoints: install
	$(PY) -m minigen.checkpoints build $(NAMES)

slides: install
	$(VENV)/bin/jupyter nbconvert --to slides --output-dir docs/slides notebooks/[0-9]*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache **/__pycache__
