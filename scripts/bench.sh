#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md, on real PostgreSQL, Redis and Celery workers.
#   make bench                                  # every benchmark with its defaults
#   make bench ARGS="fanout --recipients 10000"  # one benchmark with its own options (--help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure_services.sh
if [ $# -gt 0 ]; then
    name=$1
    shift
    exec .venv/bin/python -m "bench.$name.run" "$@"
fi
for name in api fanout purge; do
    echo "== bench/$name"
    .venv/bin/python -m "bench.$name.run"
done
