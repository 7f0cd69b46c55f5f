# The two commands of the README: `make repro` (the main job) and `make test` (the tests).
PYTHON ?= python3
STAMP := .setup.stamp

.PHONY: setup repro test lint

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	$(PYTHON) -m pytest -q

lint: $(STAMP)
	ruff check part stages tests bench
