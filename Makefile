# Signalbox: `make run` starts the platform on the embedded default; `make test` runs the suite
# against real PostgreSQL, Redis and Celery workers. Both install what they need into .venv, from the
# hash-locked requirements (requirements/*.txt, made from *.in by `make lock`; docs/release.md).

# Python 3.11, 3.12 or 3.13: the first found, or PYTHON=/path/to/python3.x.
PYTHON ?= $(firstword $(foreach p,python3.11 python3.12 python3.13,$(shell command -v $(p) 2>/dev/null)))
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet --require-hashes
# One lock for every supported Python (3.11-3.13): uv resolves "universally", with markers.
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes

.PHONY: run test fuzz lint format typecheck bench faults clean install-dev install-base lock version image secrets

$(BIN)/python:
	@[ -n "$(PYTHON)" ] && command -v $(PYTHON) >/dev/null 2>&1 || { echo "Signalbox needs Python 3.11, 3.12 or 3.13 (none found); set PYTHON=/path/to/python3.x"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' || { echo "Signalbox supports Python 3.11 to 3.13; $(PYTHON) is $$($(PYTHON) -V)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Every install checks the hashes of every package, transitive ones included (pip --require-hashes).
$(VENV)/.base-installed: requirements/base.txt | $(BIN)/python
	$(PIP_INSTALL) -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/base.txt requirements/dev.txt | $(BIN)/python
	$(PIP_INSTALL) -r requirements/dev.txt
	touch $@ $(VENV)/.base-installed

install-base: $(VENV)/.base-installed
install-dev: $(VENV)/.dev-installed

# Re-resolve the locks after editing requirements/base.in or dev.in (or to take upgrades): exact
# versions and hashes for Python 3.11-3.13; dev.txt keeps base.txt's versions (-c base.txt).
lock: | $(BIN)/python
	@[ -x $(BIN)/uv ] || $(BIN)/python -m pip install --quiet "$$(grep '^uv==' requirements/dev.in)"
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(LOCK) --output-file requirements/base.txt requirements/base.in
	UV_CUSTOM_COMPILE_COMMAND="make lock" $(LOCK) --output-file requirements/dev.txt requirements/dev.in

# docker compose's .env with every secret generated (refuses to overwrite one in use).
secrets:
	@python3 scripts/generate_secrets.py

# The one version source is pyproject.toml's [project] version (docs/release.md).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
version:
	@echo $(VERSION)

# The production image, labelled with the version (the Dockerfile refuses a VERSION that differs).
image:
	docker build --build-arg VERSION=$(VERSION) -t signalbox:$(VERSION) .

# The local-run tools (honcho, the provider sandbox, a packaged redis-server) are in the dev set.
run: install-dev
	@scripts/run.sh

test: install-dev
	@scripts/test.sh $(ARGS)

# A longer Schemathesis pass than the one inside `make test` (tests/fuzz; CONTRIBUTING.md, "Fuzzing").
# A random seed each run, printed; replay a failure with SIGNALBOX_FUZZ_SEED=<seed> make fuzz.
FUZZ_EXAMPLES ?= 100
fuzz: install-dev
	@scripts/ensure_services.sh
	@seed=$${SIGNALBOX_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "== fuzz: $(FUZZ_EXAMPLES) examples per operation, SIGNALBOX_FUZZ_SEED=$$seed"; \
	SIGNALBOX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SIGNALBOX_FUZZ_SEED=$$seed $(BIN)/python -m pytest tests/fuzz -p no:xdist -q $(ARGS)

# Lint, format, types, and the layering rules (import-linter contracts + no imports hidden in functions).
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/python scripts/check_imports.py

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-dev
	@scripts/bench.sh $(ARGS)

# The fault matrix (docs/reliability.md, "Fault matrix"): its own database, Redis and sandbox.
# e.g. make faults ARGS="--recipients 500 --fault sigkill-child"
faults: install-dev
	$(BIN)/python -m bench.faults.run $(ARGS)

clean:
	rm -rf data/ .mypy_cache .ruff_cache
