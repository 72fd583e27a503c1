"""Helpers for the observability tests: captured log lines, Prometheus scrapes, a queue of our own."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from apps.observability.testing_tasks import RUNS_TABLE
from project.logging import logging_config

SLOW_JOB = "signalbox.testing.slow_job"  # apps/observability/testing_tasks.py, in workers with SIGNALBOX_TEST_TASKS=1


class CapturedLog:
    def __init__(self, stream: io.StringIO, fmt: str) -> None:
        self.stream = stream
        self.fmt = fmt

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        assert self.fmt == "json"
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]


@pytest.fixture
def capture_logs() -> Iterator[Callable[..., CapturedLog]]:
    """Adds a handler with the production formatter to the root logger: what a process would write."""
    handlers: list[logging.Handler] = []
    root = logging.getLogger()
    old_level = root.level

    def start(fmt: str = "json") -> CapturedLog:
        config = logging_config(level="DEBUG", fmt=fmt)["formatters"]["structured"]
        factory = config.pop("()")
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(factory(**config))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        handlers.append(handler)
        return CapturedLog(stream, fmt)

    yield start
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(old_level)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse_metrics(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when absent (a counter never incremented is not exported)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def node_name(worker: Any) -> str:
    """The Celery node name of a test-owned worker (for remote control aimed at it alone)."""
    from workers.celery import app

    stats = app.control.inspect(timeout=2.0).stats() or {}
    (name,) = [name for name, info in stats.items() if info.get("pid") == worker.proc.pid]
    return name


@contextlib.contextmanager
def consumers_paused(queue: str) -> Iterator[None]:
    """Makes the workers started after this the only consumers of `queue`, until the block ends.

    The session-wide worker (tests/conftest.py) consumes every queue; a test that must know which
    worker runs its tasks (to kill it, or to read its metrics) asks the session worker of this
    pytest process, if one runs, to stop consuming the queue meanwhile.
    """
    from workers.celery import app

    mine = f"test-{os.getpid()}-"
    names = [name for reply in app.control.ping(timeout=1.0) or [] for name in reply if name.startswith(mine)]
    if names:
        app.control.cancel_consumer(queue, destination=names, reply=True, timeout=5)
    try:
        yield
    finally:
        if names:
            app.control.add_consumer(queue, destination=names, reply=True, timeout=5)


@pytest.fixture
def own_queue(start_worker: Any) -> Iterator[Callable[[str], None]]:
    """`own_queue("maintenance")` before `start_worker(...)`: see `consumers_paused`."""
    with contextlib.ExitStack() as stack:
        yield lambda queue: stack.enter_context(consumers_paused(queue))


def purge_queue(queue: str) -> None:
    from workers.celery import app

    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        channel.queue_purge(queue)


@pytest.fixture
def runs_table(transactional_db):
    """The table `slow_job` records its starts and completions in; the maintenance queue starts empty."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} "
            "(id bigserial PRIMARY KEY, job_key text NOT NULL, event text NOT NULL, pid int NOT NULL, at timestamptz)"
        )
        cursor.execute(f"TRUNCATE {RUNS_TABLE}")
    purge_queue("maintenance")
    yield RUNS_TABLE
    purge_queue("maintenance")  # a failed test must not leave its jobs to the next one
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {RUNS_TABLE}")


def runs(event: str) -> list[tuple[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT job_key, pid FROM {RUNS_TABLE} WHERE event = %s ORDER BY id", [event])  # noqa: S608
        return list(cursor.fetchall())
