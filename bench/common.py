"""What every benchmark does around its measurement: log with a clock, a database of its own on the
local PostgreSQL (created fresh, dropped at the end), a free port for a process it starts."""

from __future__ import annotations

import contextlib
import socket
from datetime import UTC, datetime
from typing import Any


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(host: str, port: int, user: str) -> Any:
    import psycopg

    return psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True)


def database_create(name: str, *, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres") -> None:
    """A new empty database `name` (one left by an interrupted run is dropped first)."""
    with _admin(host, port, user) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def database_drop(name: str, *, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres") -> None:
    """Drops `name`, closing this process's own Django connections to it first (if Django is set up)."""
    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()
    with _admin(host, port, user) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
