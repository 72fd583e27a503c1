"""Fixtures for tracked tasks: the test-only task types in both processes, polling, and owned workers.

The test task types live in apps/tasks/testing.py. The worker is a separate process that imports
them when SIGNALBOX_TEST_TASKS=1; setting it here, at collection, comes before the session worker
starts (its environment is copied from os.environ then).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ["SIGNALBOX_TEST_TASKS"] = "1"

import apps.tasks.testing  # noqa: F401  (registers the test task types in this process)
from tests.conftest import WorkerProcess, wait_for

FINAL = {"succeeded", "failed", "cancelled", "dead"}


def start_task(api: Any, name: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/v1/tasks/", {"name": name, "input": data or {}, **extra}, format="json")
    assert response.status_code == 202, response.json()
    assert response["Location"] == f"/api/v1/tasks/{response.json()['id']}/"
    return dict(response.json())


def poll_until(
    api: Any, task_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = api.get(f"/api/v1/tasks/{task_id}/").json()
        return body if predicate(body) else None

    result: dict[str, Any] = wait_for(check, timeout=timeout, interval=0.1, message=f"task {task_id}")
    return result


def poll_finished(api: Any, task_id: str, timeout: float = 30) -> dict[str, Any]:
    return poll_until(api, task_id, lambda body: body["status"] in FINAL, timeout)


@pytest.fixture
def own_tasks_worker(start_worker: Callable[..., WorkerProcess]) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts a test-owned worker that is, for this test, the only consumer of the `tasks` queue.

    Any other worker of this run (the session worker) stops consuming `tasks` until the test ends,
    so the task under test surely runs in the process the test is about to kill.
    """
    from workers.celery import app

    paused: list[str] = []

    def start(**env: str) -> WorkerProcess:
        worker = start_worker(queues="tasks", concurrency=1, **env)
        assert worker.proc is not None
        stats = app.control.inspect(timeout=2).stats() or {}
        ours = f"test-{os.getpid()}-"
        others = [name for name, info in stats.items() if name.startswith(ours) and info["pid"] != worker.proc.pid]
        others = [name for name in others if name not in paused]
        if others:
            app.control.cancel_consumer("tasks", destination=others, reply=True, timeout=5)
            paused.extend(others)
        return worker

    yield start
    if paused:
        app.control.add_consumer("tasks", destination=paused, reply=True, timeout=5)
