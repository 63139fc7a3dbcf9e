# The two commands: `make lab` (set up, then open the lessons) and `make test`.
# Both create .venv when it is missing; nothing else needs to be installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB_ARGS ?=
# JupyterLab refuses to start as root (containers, Binder-like images) unless told to.
ROOT_ARGS := $(if $(filter 0,$(shell id -u)),--allow-root)
PYTEST_ARGS ?=
# make test runs in two parts: everything that may share the machine on JOBS workers (xdist, one
# file at a time per worker, so a notebook's cells stay in order; one thread each, see
# conftest.py), then the `serial` tests alone.
JOBS ?= 2
# The CPU build of PyTorch: a plain `pip install torch` would take a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: lab test quick lint format gpu benchmarks binder-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) \
		|| $(BIN)/python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lab: $(STAMP)  ## set up, then start JupyterLab on lessons/ (LAB_ARGS="--no-browser --port 8899")
	@echo "Starting JupyterLab on lessons/ (its URL follows)"
	$(BIN)/jupyter lab --notebook-dir=lessons $(ROOT_ARGS) $(LAB_ARGS)

test: $(STAMP) lint  ## set up, then run every test (but Binder's from-scratch build: binder-check)
	$(BIN)/python -m pytest -m "not binder and not serial" -n $(JOBS) --dist loadfile $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "serial and not binder" $(PYTEST_ARGS)

binder-check: $(STAMP)  ## build Binder's environment from binder/ in a fresh venv, run postBuild and lesson 00 there
	$(BIN)/python -m pytest -m binder -rs $(PYTEST_ARGS)

quick: $(STAMP)  ## the inner loop: everything but slow tests and notebooks
	$(BIN)/python -m pytest tests -m "not slow and not notebook and not browser and not binder" -x -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

gpu: $(STAMP)  ## the GPU tests (skipped, with the reason, without CUDA)
	$(BIN)/python -m pytest -m gpu -rs

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
