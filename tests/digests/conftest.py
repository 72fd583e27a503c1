"""Fixtures for the digest tests: the notification fixtures (templates, recipients, the recording
sink tenant), helpers to set preferences, and a test-owned worker that alone consumes `digests`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import WorkerProcess
from tests.notifications.conftest import make_recipients, make_template, recording_tenant  # noqa: F401


@pytest.fixture
def prefer(tenant: Any) -> Callable[..., Any]:
    """Sets a recipient's preference layer (for every category unless `category` is given)."""
    from apps.notifications.models import Category, Preference, Recipient

    def set_preference(external_id: str, category: str | None = None, **fields: Any) -> Any:
        return Preference.objects.create(
            tenant=tenant,
            recipient=Recipient.objects.get(tenant=tenant, external_id=external_id),
            category=Category.objects.get(tenant=tenant, key=category) if category else None,
            **fields,
        )

    return set_preference


@pytest.fixture
def own_digests_worker(start_worker: Callable[..., WorkerProcess]) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts a test-owned worker that is, for this test, the only consumer of the `digests` queue
    (the session worker, if running, stops consuming it until the test ends), so a flush surely
    runs in the process the test is about to kill."""
    from workers.celery import app

    paused: list[str] = []

    def start() -> WorkerProcess:
        worker = start_worker(queues="digests", concurrency=1)
        assert worker.proc is not None
        stats = app.control.inspect(timeout=2).stats() or {}
        ours = f"test-{os.getpid()}-"
        others = [n for n, info in stats.items() if n.startswith(ours) and info["pid"] != worker.proc.pid]
        if others:
            app.control.cancel_consumer("digests", destination=others, reply=True, timeout=5)
            paused.extend(others)
        return worker

    yield start
    if paused:
        app.control.add_consumer("digests", destination=paused, reply=True, timeout=5)


@pytest.fixture
def worker(worker: Any) -> Iterator[Any]:
    """The session worker; at teardown, waits for what the test started to finish."""
    from tests.scheduling.pipeline import wait_until_idle

    yield worker
    wait_until_idle()
