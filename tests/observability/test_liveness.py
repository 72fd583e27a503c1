"""Worker liveness: the heartbeat file a worker touches from its event loop, and the probe reading it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.probe", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
    )


def test_probe_fails_without_a_heartbeat_and_when_it_is_stale(tmp_path):
    heartbeat = tmp_path / "worker.heartbeat"
    missing = probe("--file", str(heartbeat), "--max-age", "60")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr

    heartbeat.touch()
    assert probe("--file", str(heartbeat), "--max-age", "60").returncode == 0

    old = time.time() - 120
    os.utime(heartbeat, (old, old))
    stale = probe("--file", str(heartbeat), "--max-age", "60")
    assert stale.returncode == 1
    assert "stuck" in stale.stderr


def test_probe_without_a_file_is_a_configuration_error():
    env = {k: v for k, v in os.environ.items() if k != "WORKER_HEARTBEAT_FILE"}
    result = subprocess.run(
        [sys.executable, "-m", "workers.probe"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "WORKER_HEARTBEAT_FILE" in result.stderr


@pytest.mark.worker
def test_a_running_worker_keeps_its_heartbeat_fresh_and_a_frozen_one_fails_the_probe(start_worker, tmp_path):
    heartbeat = tmp_path / "beat" / "worker.heartbeat"
    worker = start_worker(
        queues="maintenance", concurrency=1, WORKER_HEARTBEAT_FILE=str(heartbeat), WORKER_HEARTBEAT_INTERVAL="0.5"
    )
    wait_for(heartbeat.exists, message="the heartbeat file")
    first = heartbeat.stat().st_mtime
    wait_for(lambda: heartbeat.stat().st_mtime > first, timeout=10, message="a second heartbeat")
    assert probe("--file", str(heartbeat), "--max-age", "5").returncode == 0

    # A wedged main process (here: stopped) no longer touches the file, and the probe says so.
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(3)
        assert probe("--file", str(heartbeat), "--max-age", "2").returncode == 1
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    wait_for(lambda: probe("--file", str(heartbeat), "--max-age", "2").returncode == 0, timeout=15)
