#!/usr/bin/env bash
# The embedded default under test (tests/embedded): `make run`'s SQLite (WAL) and its own redis-server,
# started the way a newcomer starts them. A pytest pass of its own: its settings are not the PostgreSQL
# suite's, and tests/conftest.py (PostgreSQL only) is not loaded (--confcutdir).
set -euo pipefail
cd "$(dirname "$0")/.."
# Arguments go to pytest; without a path among them, the whole of tests/embedded runs.
ARGS=("$@")
[[ " $* " == *" tests/embedded"* ]] || ARGS=(tests/embedded "${ARGS[@]}")
exec .venv/bin/python -m pytest -p no:xdist --confcutdir=tests/embedded --ds=tests.embedded.settings "${ARGS[@]}"
