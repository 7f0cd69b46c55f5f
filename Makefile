# The two commands of the README: `make repro` (the main job) and `make test` (the tests).
# Everything runs inside the project's virtual environment, .venv, made by scripts/setup.sh:
# its bin/ goes first on PATH, so `python` and `dvc` (and the `python` of every dvc.yaml
# command) are the venv's. By hand: `source .venv/bin/activate`.
VENV := .venv
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)
STAMP := $(VENV)/.setup.stamp

.PHONY: setup repro test test-fast lint study study-pipeline docs

$(STAMP): pyproject.toml scripts/setup.sh
	PART_VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	dvc repro

# The test tiers (docs/development.md, "Tests"): `make test` runs every test, two pytest-xdist workers, each
# file's tests in one worker, the longest first (tests/conftest.py), the 30 slowest printed; `make test-fast` the
# inner loop: the tests not marked slow (no subprocess pipelines).
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=30
test: $(STAMP)
	python -m pytest -q $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	python -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

# The confirmatory study (docs/study.md): a DVC pipeline of its own, grown seed
# by seed; --allow-missing: the seeds already run need not be in this machine's DVC cache.
study: $(STAMP)
	cd study && dvc repro --allow-missing

# study/dvc.yaml, written from the main pipeline's stages (tests/test_study_pipeline.py checks it).
study-pipeline: $(STAMP)
	python -m part.study.pipeline_file

# The documentation site (docs/development.md, "Documentation"): the pages drawn from the code
# (docs/architecture.md, docs/params.md), then the site in site/, strict: a broken link fails.
docs: $(STAMP)
	python -m part.docs
	python -m mkdocs build --strict

lint: $(STAMP)
	ruff check part stages tests bench

# The oldest torch this project declares (pyproject.toml: torch>=2.11), the GPU machine's: a
# python 3.12 venv, .venv-torch211, with torch 2.11 and torchvision 0.26, and the suite in it.
# PY312=/path/to/python3.12 to choose the interpreter; PYTEST_ARGS="--collect-only -q" etc.
TORCH211_VENV := .venv-torch211
PY312 ?= $(firstword $(shell command -v python3.12 >/dev/null 2>&1 && python3.12 -c '' 2>/dev/null \
	&& command -v python3.12) $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12))
PYTEST_ARGS ?= -q
.PHONY: test-torch211
test-torch211: export VIRTUAL_ENV := $(CURDIR)/$(TORCH211_VENV)
test-torch211: export PATH := $(CURDIR)/$(TORCH211_VENV)/bin:$(subst $(CURDIR)/$(VENV)/bin:,,$(PATH))
test-torch211:
	@test -n "$(PY312)" || { echo "test-torch211: no python 3.12 found; set PY312=/path/to/python3.12" >&2; exit 2; }
	test -x $(TORCH211_VENV)/bin/python || $(PY312) -m venv $(TORCH211_VENV)
	python -m pip install --progress-bar off --disable-pip-version-check \
	  "torch==2.11.*" "torchvision==0.26.*" -e ".[test]"
	python -c 'import torch, torchvision; assert torch.__version__.startswith("2.11"), torch.__version__'
	python -m pytest $(PYTEST_ARGS)
