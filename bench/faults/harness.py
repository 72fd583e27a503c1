"""The processes the fault matrix owns: a redis-server on a free port (the broker, breakers and
limits), Celery workers and beats, a gunicorn serving the provider callbacks, and the provider
sandbox. Every one is started here and ended here by its own pid; the machine's Redis (6379) and
any other process are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
WORKER_QUEUES = "notifications.high,notifications.default,notifications.bulk,digests,tasks,maintenance"


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout} s")


def end(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Ends one process this harness started: `sig`, then SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """redis-server on 127.0.0.1:<port>; `persistent` keeps an AOF fsynced on every write, so a
    `kill -9` and a start find what was queued. Each `start(fresh=True)` begins empty."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.persistent = False
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, persistent: bool | None = None, fresh: bool = False) -> None:
        if persistent is not None:
            self.persistent = persistent
        if fresh:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if not binary:
            raise SystemExit("redis-server is not installed")
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port, 10, "redis-server")

    def kill(self) -> None:
        end(self.proc, signal.SIGKILL)


class CeleryProcess:
    """A `celery worker` or `celery beat` subprocess of the production app, logging to a file."""

    def __init__(self, kind: str, log_path: Path, *, concurrency: int = 2, env: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.log_path = log_path
        self.concurrency = concurrency
        self.env = {**os.environ, **(env or {})}
        self.name = f"faults-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.orphans: list[psutil.Process] = []

    def start(self) -> CeleryProcess:
        if self.kind == "worker":
            command = [
                "worker", "-Q", WORKER_QUEUES, "-c", str(self.concurrency), "-P", "prefork",
                "-n", f"{self.name}@%h", "--without-mingle", "--without-gossip", "-l", "INFO",
            ]  # fmt: skip
        else:
            command = ["beat", "-l", "INFO", "--max-interval", "2", "-s", str(self.log_path.with_suffix(".db"))]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery", *command],
            cwd=ROOT, env=self.env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        if self.kind == "worker":
            self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"the worker exited at start; see {self.log_path}")
            if b" ready." in self.log_path.read_bytes()[-20000:] and len(self.children()) >= self.concurrency:
                return
            time.sleep(0.2)
        raise SystemExit(f"the worker was not ready within 90 s; see {self.log_path}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        if not self.alive:
            return []
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            return list(psutil.Process(self.proc.pid).children(recursive=True))
        return []

    def pids(self) -> set[int]:
        assert self.proc is not None
        return {self.proc.pid, *(c.pid for c in self.children())}

    def kill_main(self) -> None:
        """SIGKILL the main process; its prefork children, orphaned, are remembered for `stop`."""
        self.orphans = self.children()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        end(self.proc, signal.SIGTERM, timeout=60)
        for orphan in self.orphans:
            with contextlib.suppress(psutil.Error):
                orphan.kill()


class Web:
    """gunicorn serving the project on a free port: where the sandbox posts SendGrid's Event Webhook."""

    def __init__(self, log_path: Path, port: int) -> None:
        self.log_path = log_path
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "project.wsgi:application", "-b", f"127.0.0.1:{self.port}",
             "-w", "2", "--threads", "4", "--timeout", "60"],
            cwd=ROOT, env=os.environ.copy(), stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port, 60, "gunicorn")

    def stop(self) -> None:
        end(self.proc)


def backends_of(pids: set[int], pg_port: int) -> set[int]:
    """The client ports of the PostgreSQL connections these processes hold (to find their backends)."""
    ports: set[int] = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == pg_port:
                    ports.add(conn.laddr.port)
    return ports


def stop_all(*procs: Any) -> None:
    for proc in procs:
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stop()
