# Signalbox: `make run` starts the platform on the embedded default; `make test` runs the suite
# against real PostgreSQL, Redis and Celery workers. Both install what they need into .venv.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format typecheck bench clean install-dev install-base

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Signalbox needs Python 3.11 ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.base-installed: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/base.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@ $(VENV)/.base-installed

install-base: $(VENV)/.base-installed
install-dev: $(VENV)/.dev-installed

run: install-base
	@scripts/run.sh

test: install-dev
	@scripts/test.sh $(ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-dev
	@scripts/bench.sh $(ARGS)

clean:
	rm -rf data/ .mypy_cache .ruff_cache
