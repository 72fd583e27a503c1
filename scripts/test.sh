#!/usr/bin/env bash
# The whole check: lint, format, types, then the pytest suite on real PostgreSQL, Redis and workers.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

scripts/ensure_services.sh

echo "== ruff (lint and format)"
$BIN/ruff check .
$BIN/ruff format --check .
echo "== mypy"
$BIN/mypy .
echo "== layering (import-linter contracts, no imports hidden in functions)"
$BIN/python scripts/check_imports.py

echo "== pytest"
export SIGNALBOX_TEST_RUN="${SIGNALBOX_TEST_RUN:-$(date +%s)$$}"
# Two xdist workers on two cores; each gets its own database, broker prefix and Celery worker.
$BIN/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"

# The embedded default `make run` starts (SQLite in WAL mode, its own redis-server): its own pass,
# with its own settings (tests/embedded; about a minute). Skipped only when pytest arguments were
# given, i.e. a focused run (`make test ARGS=...`); `make test` alone always runs it.
if [ "$#" -eq 0 ]; then
  echo "== pytest (embedded default)"
  scripts/test_embedded.sh
fi
