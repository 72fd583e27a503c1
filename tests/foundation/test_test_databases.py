"""`make test` clears test databases left by interrupted runs, and never those of a run in progress."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _databases(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute("select datname from pg_database where datname like 'test_sbx_%'")}


@pytest.fixture
def server() -> Iterator[psycopg.Connection]:
    conn = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
    yield conn
    conn.close()


def test_only_databases_of_dead_runs_are_dropped(server: psycopg.Connection, db: None) -> None:
    # The real registry: this suite's own databases (and other runs') must survive the call too.
    runs = Path(os.environ.get("TMPDIR", "/tmp")) / "signalbox-test-runs"
    live, dead, unregistered = (f"zz{uuid.uuid4().hex[:8]}" for _ in range(3))
    names = [f"test_sbx_{live}_gw0", f"test_sbx_{dead}_gw1", f"test_sbx_{unregistered}"]
    for name in names:
        server.execute(f'create database "{name}"')
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (runs / f"{live}.pid").write_text(str(sleeper.pid))  # a run in progress
        (runs / f"{dead}.pid").write_text("999999999")  # a run whose process is gone
        subprocess.run(
            [str(ROOT / "scripts" / "ensure_services.sh")],
            check=True,
            capture_output=True,
        )
        left = _databases(server)
        assert any(name.startswith(f"test_sbx_{os.environ['SIGNALBOX_TEST_RUN']}") for name in left)
        assert names[0] in left
        assert names[1] not in left and names[2] not in left
    finally:
        sleeper.kill()
        for run in (live, dead):
            (runs / f"{run}.pid").unlink(missing_ok=True)
        for name in names:
            server.execute(f'drop database if exists "{name}"')
