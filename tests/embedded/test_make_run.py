"""`make run` end to end: scripts/run.sh as a newcomer runs it, on the embedded default.

No DATABASE_URL and no CELERY_BROKER_URL: SQLite in WAL mode and run.sh's own redis-server under a
temporary SIGNALBOX_DATA_DIR, every Procfile process under honcho, on free ports. The README's
example notification goes out with the demo key run.sh prints and arrives in the provider sandbox's
outbox; then Ctrl-C (SIGINT to the process group) stops everything, leaving no process and no port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.embedded.conftest import ROOT, port_is_free

# run.sh's port variables, and the Procfile's.
PORT_NAMES = (
    "API_PORT", "FLOWER_PORT", "SANDBOX_PORT", "SMTP_PORT", "REALTIME_PORT", "EMBEDDED_REDIS_PORT",
    "METRICS_EXPORTER_PORT", "URGENT_METRICS_PORT", "NOTIFICATIONS_METRICS_PORT", "BACKGROUND_METRICS_PORT",
    "WEBHOOKS_METRICS_PORT", "MAINTENANCE_METRICS_PORT",
)  # fmt: skip
# What a newcomer's shell does not have: this suite's own settings, and anything that would move
# the platform off the embedded default.
NOT_INHERITED = re.compile(r"^(DATABASE_URL|CELERY_.*|SIGNALBOX_.*|DJANGO_SETTINGS_MODULE|CACHE_URL|DEBUG|PORT|"
                           r"PROMETHEUS_MULTIPROC_DIR|WORKER_METRICS_PORT|PYTEST_.*)$")  # fmt: skip
START_TIMEOUT = 150.0


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http(method: str, url: str, body: Any = None, key: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def descendants(pid: int) -> set[int]:
    """Every live process under `pid` (honcho starts its children in sessions of their own, so the
    process group alone would miss them)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Platform:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path
    ports: dict[str, int]
    seen: set[int] = field(default_factory=set)

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def demo_key(self) -> str:
        found = re.search(r"Demo API key (sbx_\S+)", self.output())
        return found.group(1) if found else ""

    def remember_processes(self) -> None:
        self.seen |= descendants(self.proc.pid)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not NOT_INHERITED.match(k)}
    env.update({name: str(port) for name, port in ports.items()}, SIGNALBOX_DATA_DIR=str(data_dir))
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        # Its own process group and session, like a job in a terminal: Ctrl-C reaches the group.
        proc = subprocess.Popen(
            ["scripts/run.sh"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    platform = Platform(proc=proc, data_dir=data_dir, log=log, ports=ports)
    try:
        yield platform
    finally:
        platform.remember_processes()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in platform.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_until_up(platform: Platform) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if platform.proc.poll() is not None:
            pytest.fail(f"run.sh exited with {platform.proc.returncode}:\n{platform.output()[-4000:]}")
        try:
            api, _ = http("GET", platform.url("API_PORT", "/healthz"))
            box, _ = http("GET", platform.url("SANDBOX_PORT", "/_sandbox/health"))
        except OSError:
            api = box = 0
        if api == box == 200 and platform.demo_key():
            return
        time.sleep(0.5)
    pytest.fail(f"make run was not up after {START_TIMEOUT}s:\n{platform.output()[-4000:]}")


def readme_example() -> dict[str, Any]:
    """The body of the README's `curl -X POST .../api/v1/notifications/` example, as documented."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"/api/v1/notifications/ \\\n.*?-d '(\{.*?\})'", readme, re.S)
    assert found, "README.md lost its notification example"
    return dict(json.loads(found.group(1)))


def test_make_run_sends_the_readme_example_on_the_embedded_default_and_stops_cleanly(platform: Platform):
    wait_until_up(platform)
    platform.remember_processes()

    # SQLite in WAL mode, in the data directory; no PostgreSQL anywhere.
    database = platform.data_dir / "signalbox.sqlite3"
    assert f"Embedded SQLite database at {database}" in platform.output()
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # run.sh's own redis-server, a child of run.sh on the port given, holding the workers' queues.
    port = platform.ports["EMBEDDED_REDIS_PORT"]
    assert "Embedded Redis" in platform.output() and f"127.0.0.1:{port}" in platform.output()
    children = {int(p) for p in subprocess.run(["pgrep", "-P", str(platform.proc.pid)], capture_output=True,
                                               text=True).stdout.split()}  # fmt: skip
    assert any("redis-server" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace") for p in children)
    broker = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def bound_queues() -> set[str]:  # kombu's `_kombu.binding.<exchange>` sets: routing key, pattern, queue
        members = (m for k in broker.scan_iter("_kombu.binding.*") for m in broker.smembers(k))
        texts = (m.decode() if isinstance(m, bytes) else str(m) for m in members)
        return {t.split("\x06\x16")[-1] for t in texts}

    deadline = time.monotonic() + 60
    while "notifications.default" not in bound_queues() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {"notifications.default", "notifications.high", "maintenance"} <= bound_queues()

    # The README's example, with the demo key run.sh printed.
    key = platform.demo_key()
    status, accepted = http("POST", platform.url("API_PORT", "/api/v1/notifications/"), readme_example(), key)
    assert status == 202, accepted
    assert accepted["status"] == "accepted"
    url = platform.url("API_PORT", f"/api/v1/notifications/{accepted['id']}/")
    deadline = time.monotonic() + 60
    while True:
        status, notification = http("GET", url, key=key)
        assert status == 200, notification
        if notification["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert notification["status"] == "completed", notification
    assert notification["counts"] == {"email": {"sent": 1}, "in_app": {"delivered": 1}}
    # The email is in the sandbox's outbox...
    status, outbox = http("GET", platform.url("SANDBOX_PORT", "/_sandbox/messages"))
    assert status == 200
    mails = [m for m in outbox["messages"] if m["recipient"] == "ada@example.com"]
    assert [m["subject"] for m in mails] == ["Welcome to Signalbox, Ada"]
    # ...and the notification is a row of the SQLite file.
    with sqlite3.connect(database) as db:
        (stored,) = db.execute(
            "SELECT status FROM notifications_notification WHERE replace(id, '-', '') = ?",
            [accepted["id"].replace("-", "")],
        ).fetchone()
    assert stored == "completed"

    # Ctrl-C: SIGINT to the process group. Everything stops; nothing is left running or listening.
    platform.remember_processes()
    assert len(platform.seen) >= 12, platform.seen  # redis, honcho and every Procfile process
    os.killpg(platform.proc.pid, signal.SIGINT)
    assert platform.proc.wait(timeout=60) == 130
    deadline = time.monotonic() + 20
    while any(alive(p) for p in platform.seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = sorted(p for p in platform.seen if alive(p))
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in left if alive(p)]
    busy = [name for name, p in platform.ports.items() if not port_is_free(p)]
    assert busy == []
