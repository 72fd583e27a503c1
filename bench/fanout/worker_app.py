"""The Celery app the benchmark's workers run: the production app plus two bench-only additions.

- Every SQL statement a worker process executes is counted (a Django execute wrapper) and the
  count is added to a Redis key after each task, so the run can report queries per delivery.
- The naive baseline's task (`bench.naive.deliver`, in naive.py) is registered.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import signals

from workers.celery import app

# One key per run (set by run.py), so two runs on one Redis never count into each other.
COUNTER_KEY = os.environ.get("BENCH_COUNTER_KEY", "sbxbench:queries")
_executed = 0


def _count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    global _executed
    _executed += 1
    return execute(sql, params, many, context)


@signals.worker_process_init.connect
def _install_counter(**kwargs: Any) -> None:
    from django.db import connections

    connections["default"].execute_wrappers.append(_count)


@signals.task_postrun.connect
def _flush_counter(**kwargs: Any) -> None:
    global _executed
    if _executed:
        redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).incrby(COUNTER_KEY, _executed)
        _executed = 0


import bench.fanout.naive  # noqa: E402,F401  (registers the baseline task)

__all__ = ["app"]
