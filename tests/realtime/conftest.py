"""A real realtime process (uvicorn project.asgi) against this run's database and Redis prefix."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from websockets.sync.client import ClientConnection, connect

os.environ["SIGNALBOX_TEST_TASKS"] = "1"  # the test task types, here and in the session worker

import apps.tasks.testing  # noqa: F401 (registers the test task types in this process)
from apps.realtime.schema import message_schema
from tests.conftest import ROOT, worker_env
from tests.notifications.conftest import make_recipients, make_template  # noqa: F401 (fixtures)
from tests.reliability.conftest import free_port

FAST = {
    "SIGNALBOX_REALTIME_HEARTBEAT_SECONDS": "0.5",
    "SIGNALBOX_REALTIME_AUTH_RECHECK_SECONDS": "0.5",
    "SIGNALBOX_REALTIME_STATE_REFRESH_SECONDS": "5",
}


# Every message a test receives is validated against the published schema (apps/realtime/schema.json).
MESSAGES = Draft202012Validator(message_schema(), format_checker=FormatChecker())
CLOSE = Draft202012Validator({"$defs": message_schema()["$defs"], "$ref": "#/$defs/close"})


def valid(message: dict[str, Any]) -> dict[str, Any]:
    MESSAGES.validate(message)
    return message


class Realtime:
    def __init__(self, log: Path, **env: str) -> None:
        self.port = free_port()
        self.log = log
        self.env = worker_env(**{**FAST, **env})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log", "--timeout-graceful-shutdown", "2"],
            cwd=ROOT, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"realtime exited; see {self.log}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"realtime did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def ws(self, path: str, **query: Any) -> ClientConnection:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return connect(f"ws://127.0.0.1:{self.port}{path}?{qs}", open_timeout=10)

    def sse(self, path: str, **kw: Any) -> Any:
        return httpx.stream("GET", f"http://127.0.0.1:{self.port}{path}", timeout=20, **kw)


@pytest.fixture
def start_realtime(worker_logs: Path, transactional_db: Any) -> Iterator[Callable[..., Realtime]]:
    started: list[Realtime] = []

    def start(**env: str) -> Realtime:
        server = Realtime(worker_logs / f"realtime-{time.monotonic_ns()}.log", **env)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def receive_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> list[dict[str, Any]]:
    """Messages (heartbeats left out) up to and including the first that matches."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        message = valid(json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01))))
        if message["type"] != "heartbeat":
            got.append(message)
            if predicate(message):
                return got


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parses a text/event-stream into {event, id, data} dicts (comments skipped), each `data`
    validated: a message (whose type is the event and id the SSE id), or a close (end, reconnect)."""
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if event:
                data = json.loads(event["data"])
                if event["event"] in ("end", "reconnect"):
                    CLOSE.validate(data)
                else:
                    assert valid(data)["type"] == event["event"] and str(data.get("id", "")) == event.get("id", "")
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            event[field] = value.strip()
