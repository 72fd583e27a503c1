"""Tasks for the test suite only, registered in workers started with `SIGNALBOX_TEST_TASKS=1`.

`slow_job` records each start and each completion in a table the test creates (raw SQL: it has
no model, so production has no such table), which is how the graceful-shutdown test proves that
every job completed exactly once across a SIGTERM.
"""

from __future__ import annotations

import os
import time

from celery import shared_task
from django.db import connection

RUNS_TABLE = "test_observability_job_runs"


def _record(key: str, event: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RUNS_TABLE} (job_key, event, pid, at) VALUES (%s, %s, %s, clock_timestamp())",  # noqa: S608
            [key, event, os.getpid()],
        )


@shared_task(name="signalbox.testing.slow_job", queue="maintenance")
def slow_job(key: str, seconds: float) -> str:
    _record(key, "started")
    time.sleep(seconds)
    _record(key, "completed")
    return key
