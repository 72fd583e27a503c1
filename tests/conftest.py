"""Shared fixtures: tenants and authenticated clients, and a real Celery worker subprocess.

The worker is the production worker (`celery -A workers.celery worker`) started against this
run's test database and broker prefix. Tests that need it are marked `worker` and use a
transactional database, so the worker sees committed rows.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent
# The embedded default (SQLite, its own redis-server) has its own settings and conftest, and its own
# pytest pass (scripts/test_embedded.sh, part of `make test`).
collect_ignore = ["embedded"]


def _require(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        pytest.exit(f"{what} is not reachable on {host}:{port} ({exc}); `make test` starts it.", returncode=3)


def pytest_configure(config: pytest.Config) -> None:
    # A missing service fails the run; it never turns into skipped tests.
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.exit("The test suite runs on PostgreSQL; set DATABASE_URL to a postgres:// URL.", returncode=3)
    _require(db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432), "PostgreSQL")
    _require("127.0.0.1", 6379, "Redis")
    _register_run()


def _register_run() -> None:
    """Records this run's id and process, so `make test` drops only test databases of dead runs.

    The controller registers (xdist workers are its children); the file goes when the run ends.
    """
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    runs = Path(os.environ.get("TMPDIR", "/tmp")) / "signalbox-test-runs"
    runs.mkdir(parents=True, exist_ok=True)
    marker = runs / f"{os.environ['SIGNALBOX_TEST_RUN']}.pid"
    marker.write_text(str(os.getpid()))
    atexit.register(lambda: marker.unlink(missing_ok=True))


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, message: str = "") -> Any:
    """Polls until `predicate()` is truthy and returns its value; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


@pytest.fixture
def tenant(db: Any) -> Any:
    from apps.tenancy.services import tenant_create

    return tenant_create(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db: Any) -> Any:
    from apps.tenancy.services import tenant_create

    return tenant_create(slug="globex", name="Globex")


def client_for(tenant: Any, scopes: list[str] | None = None) -> APIClient:
    from apps.tenancy.services import api_key_create

    _, clear = api_key_create(tenant=tenant, name="test", scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    client.api_key = clear  # type: ignore[attr-defined]
    return client


@pytest.fixture
def api(tenant: Any) -> APIClient:
    """A client holding a `*`-scoped key of the `acme` tenant."""
    return client_for(tenant)


@pytest.fixture
def other_api(other_tenant: Any) -> APIClient:
    return client_for(other_tenant)


# --- A real Celery worker ----------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, queues: str, concurrency: int) -> None:
        self.env = env
        self.log_path = log_path
        self.queues = queues
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from workers.celery import app

        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "workers.celery", "worker",
                "-Q", self.queues, "-c", str(self.concurrency), "-P", "prefork",
                "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
                "--without-mingle", "--without-gossip", "-l", "INFO",
            ],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        name_part = f"test-{os.getpid()}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Celery worker exited at start; see {self.log_path}")
            replies = app.control.ping(timeout=0.5) or []
            if any(name_part in next(iter(r)) for r in replies):
                return
        pytest.fail(f"Celery worker did not answer a ping within 60s; see {self.log_path}")

    def stop(self, sig: int | None = None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig is not None:
            self.proc.send_signal(sig)
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def children(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]


def worker_env(**overrides: str) -> dict[str, str]:
    from django.db import connection

    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_BROKER_KEYPREFIX": settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", ""),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: Any, django_db_blocker: Any, worker_logs: Path) -> Iterator[WorkerProcess]:
    """One worker on every queue for the whole session (tests that kill workers start their own)."""
    from workers.queues import QUEUE_NAMES

    with django_db_blocker.unblock():
        worker = WorkerProcess(worker_env(), worker_logs / "worker.log", ",".join(QUEUE_NAMES), concurrency=2)
        worker.start()
    yield worker
    worker.stop()


def _settle(timeout: float = 15.0) -> None:
    """Drops what a test left queued and waits for running tasks to end, so the flush that follows
    a transactional test neither races a worker still writing nor leaves its rows to the next test."""
    from workers.celery import app

    with contextlib.suppress(Exception):
        app.control.purge()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            active = app.control.inspect(timeout=0.5).active() or {}
        except Exception:
            return
        if not any(active.values()):
            return
        time.sleep(0.1)


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_deadlocks() -> Iterator[None]:
    """TRUNCATE takes every table's lock in turn; a worker still inside a transaction can deadlock it.
    PostgreSQL then aborts one side: retrying the flush is the whole fix."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    original = flush.Command.handle

    def handle(self: Any, **options: Any) -> Any:
        for attempt in range(6):
            try:
                return original(self, **options)
            except CommandError as exc:
                if "deadlock" not in str(exc.__cause__).lower() or attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return None

    flush.Command.handle = handle  # type: ignore[method-assign]
    yield
    flush.Command.handle = original  # type: ignore[method-assign]


@pytest.fixture
def worker(celery_worker: WorkerProcess, transactional_db: Any) -> Iterator[WorkerProcess]:
    """A running worker and a transactional database for this test."""
    yield celery_worker
    _settle()


@pytest.fixture
def start_worker(
    django_db_setup: Any, worker_logs: Path, transactional_db: Any
) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts extra, test-owned workers (to kill them); stopped at the end of the test."""
    from workers.queues import QUEUE_NAMES

    started: list[WorkerProcess] = []

    def start(queues: str = ",".join(QUEUE_NAMES), concurrency: int = 2, **env: str) -> WorkerProcess:
        w = WorkerProcess(worker_env(**env), worker_logs / f"worker-{len(started)}.log", queues, concurrency)
        w.start()
        started.append(w)
        return w

    yield start
    _settle(timeout=5.0)
    for w in started:
        w.stop()
