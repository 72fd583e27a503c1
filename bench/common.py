"""What every benchmark does around its measurement: log with a clock, a database of its own on the
local PostgreSQL (created fresh, dropped at the end), a free port for a process it starts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
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


class CpuMeter:
    """CPU seconds (user + system) spent by a set of processes between `start()` and `read()`: the
    given ones (workers, their children) and the database's client backends other than the caller's
    own. Unlike a rate, this hardly moves with what else the machine runs, so it compares two
    systems fairly on a shared machine. Backends that appear after `start()` count from zero."""

    def __init__(self, cursor: Any, pids: Any) -> None:
        self.cursor, self.pids = cursor, pids  # pids: a callable returning the process ids to watch
        self.before: dict[int, float] = {}

    def _backends(self) -> list[int]:
        self.cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return [int(row[0]) for row in self.cursor.fetchall()]

    def _sample(self) -> dict[int, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        found = {}
        for pid in {*self.pids(), *self._backends()}:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                found[pid] = (int(fields[11]) + int(fields[12])) / ticks
        return found

    def start(self) -> None:
        self.before = self._sample()

    def read(self) -> float:
        return round(sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self._sample().items()), 2)


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank); NaN for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


RESULTS = Path(__file__).resolve().parent / "results"


def results_write(name: str, results: dict[str, Any]) -> Path:
    """Writes `bench/results/<name>.json` (the previous one kept as `<name>.previous.json`)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    if path.exists():
        path.replace(RESULTS / f"{name}.previous.json")
    path.write_text(json.dumps({"at": datetime.now(UTC).isoformat(), **results}, indent=2, default=str) + "\n")
    return path


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(data, dict):
        out: dict[str, float] = {}
        for key, value in data.items():
            out.update(_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, int | float) and not isinstance(data, bool):
        return {prefix: float(data)}
    return {}


HIGHER_IS_BETTER = ("ratio", "_vs_", "rps", "rate", "per_s")


def results_compare(name: str, results: dict[str, Any], path: Path, *, fell: float = 0.20) -> list[str]:
    """Prints each ratio-to-baseline and throughput beside the previous run's, flagging any that fell
    by more than `fell` (20 %). Only higher-is-better figures are compared: ratios (`…ratio…`, `…_vs_…`)
    and throughputs (`…rps…`, `…rate…`, `…per_s…`)."""
    previous_path = RESULTS / f"{name}.previous.json"
    if not previous_path.exists():
        log(f"no previous {previous_path.name} to compare with (this run is the baseline)")
        return []
    before = _numbers(json.loads(previous_path.read_text()))
    now = _numbers(results)
    flagged: list[str] = []
    for key in sorted(now):
        if key not in before or not before[key] or not any(word in key for word in HIGHER_IS_BETTER):
            continue
        change = now[key] / before[key] - 1
        mark = "  << fell more than 20 %" if change < -fell else ""
        print(f"  {key}: {before[key]:g} -> {now[key]:g} ({change:+.0%}){mark}")
        if mark:
            flagged.append(key)
    if flagged:
        log(f"{len(flagged)} figure(s) fell more than {fell:.0%} since {previous_path.name}: {', '.join(flagged)}")
    return flagged


def bench_environment(*, database_url: str, broker_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment every benchmark runs the platform under (read by project/settings.py): the
    production settings with DEBUG off, a throwaway secret, this run's database and broker prefix
    (one per process id, so a run never meets another's messages). `extra` adds or overrides."""
    return {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "0",
        "SIGNALBOX_ALLOW_INSECURE_SETTINGS": "1",  # a measurement, not a deployment: no shared cache needed
        "SECRET_KEY": "bench-only-secret-key-do-not-deploy-4f1e0c2b9a7d",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
        "DATABASE_URL": database_url,
        "CONN_MAX_AGE": "600",
        "CELERY_BROKER_URL": broker_url,
        "CELERY_BROKER_KEYPREFIX": f"{prefix}:{os.getpid()}:",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
