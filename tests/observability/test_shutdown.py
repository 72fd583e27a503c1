"""Graceful shutdown: a worker told to stop mid-batch loses no task and runs none to completion twice.

Every job records its start and its completion in a table (apps/observability/testing_tasks.py);
the first worker gets SIGTERM while jobs run, a second worker finishes the batch, and each job must
have completed exactly once. The worker is configured as in production (k8s/workers.yaml,
docker-compose.yml): SIGTERM is Celery's soft shutdown. Without REMAP_SIGTERM (`make run`), SIGTERM
is Celery's plain warm shutdown, which waits for every running task and hands back the rest.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.conftest import wait_for
from tests.observability.conftest import SLOW_JOB, runs

pytestmark = pytest.mark.worker

# As in k8s/workers.yaml, with a soft shutdown short enough for a test.
PRODUCTION_SHUTDOWN = {"REMAP_SIGTERM": "SIGQUIT", "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT": "2"}


def publish(jobs: dict[str, float]) -> None:
    from workers.celery import app

    for key, seconds in jobs.items():
        app.send_task(SLOW_JOB, args=[key, seconds], queue="maintenance")


def finish_with_a_second_worker(start_worker, jobs: dict[str, float]) -> Counter[str]:
    start_worker(queues="maintenance", concurrency=2, SIGNALBOX_TEST_TASKS="1", **PRODUCTION_SHUTDOWN)
    wait_for(lambda: {key for key, _ in runs("completed")} >= set(jobs), timeout=90, message="every job to complete")
    time.sleep(0.5)  # a duplicate would show up now
    return Counter(key for key, _ in runs("completed"))


def test_sigterm_lets_short_jobs_finish_and_requeues_long_ones(start_worker, own_queue, runs_table):
    own_queue("maintenance")
    first = start_worker(queues="maintenance", concurrency=2, SIGNALBOX_TEST_TASKS="1", **PRODUCTION_SHUTDOWN)
    # Two long jobs first (one per child), so both children hold one when SIGTERM arrives.
    jobs = {"long-0": 5.0, "long-1": 5.0, **{f"short-{i}": 0.2 for i in range(10)}}
    publish(jobs)
    wait_for(lambda: {"long-0", "long-1"} <= {key for key, _ in runs("started")}, message="the long jobs to start")

    first.stop(signal.SIGTERM)
    # Soft shutdown: 2 s for running jobs to finish, then they are cancelled and requeued, and the
    # worker exits by itself (it was not killed) without having finished the long jobs.
    assert first.proc is not None and first.proc.returncode == 0
    assert not {key for key, _ in runs("completed")} & {"long-0", "long-1"}

    completed = finish_with_a_second_worker(start_worker, jobs)

    assert completed == Counter({key: 1 for key in jobs})
    started = Counter(key for key, _ in runs("started"))
    assert started["long-0"] == started["long-1"] == 2  # interrupted once, then run to the end
