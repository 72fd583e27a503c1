"""Worker liveness probe for Kubernetes: `python -m workers.probe --max-age 60`.

Exits 0 when the worker's heartbeat file (`WORKER_HEARTBEAT_FILE`, touched from the worker's event
loop by `apps.observability.workers.WorkerHeartbeat`) changed within `--max-age` seconds, 1 otherwise.
Deliberately imports neither Django nor Celery: an exec probe runs every few seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def heartbeat_age(path: Path) -> float | None:
    """Seconds since the file was last touched, or None when it does not exist."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fails when the Celery worker's heartbeat is stale.")
    parser.add_argument("--file", default=os.environ.get("WORKER_HEARTBEAT_FILE", ""), help="heartbeat file")
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds after which the worker is dead")
    args = parser.parse_args(argv)
    if not args.file:
        print("no heartbeat file: pass --file or set WORKER_HEARTBEAT_FILE", file=sys.stderr)
        return 2
    age = heartbeat_age(Path(args.file))
    if age is None:
        print(f"worker heartbeat {args.file} does not exist (worker not started, or not a worker)", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(f"worker heartbeat is {age:.0f}s old (max {args.max_age:.0f}s): the worker is stuck", file=sys.stderr)
        return 1
    print(f"worker alive: heartbeat {age:.1f}s old")
    return 0


if __name__ == "__main__":
    sys.exit(main())
