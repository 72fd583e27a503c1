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

echo "== pytest"
export SIGNALBOX_TEST_RUN="${SIGNALBOX_TEST_RUN:-$(date +%s)$$}"
# Two xdist workers on two cores; each gets its own database, broker prefix and Celery worker.
exec $BIN/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
