# The two commands of the README: `make repro` (the main job) and `make test` (the tests).
# Everything runs inside the project's virtual environment, .venv, made by scripts/setup.sh:
# its bin/ goes first on PATH, so `python` and `dvc` (and the `python` of every dvc.yaml
# command) are the venv's. By hand: `source .venv/bin/activate`.
VENV := .venv
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)
STAMP := $(VENV)/.setup.stamp

.PHONY: setup repro test lint

$(STAMP): pyproject.toml scripts/setup.sh
	PART_VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	python -m pytest -q

lint: $(STAMP)
	ruff check part stages tests bench
