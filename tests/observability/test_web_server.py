"""The API under gunicorn as deployed (project/gunicorn.py): JSON logs, metrics summed over its workers,
a clean exit on SIGTERM, and a refusal to start on a bad configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import wait_for
from tests.observability.conftest import free_port, scrape, value

ROOT = Path(__file__).resolve().parents[2]


def gunicorn_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "1",
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "GUNICORN_CONTROL_SOCKET": str(tmp_path / "gunicorn.ctl"),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/signalbox",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "LOG_FORMAT": "json",
        **overrides,
    }


def get(url: str, **headers: str) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_gunicorn_serves_json_logs_and_metrics_summed_over_its_workers(tmp_path):
    port = free_port()
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:project.gunicorn", "project.wsgi"],
            cwd=ROOT, env=gunicorn_env(tmp_path, PORT=str(port)), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/healthz") == 200, timeout=30, message="gunicorn to answer")
        for _ in range(20):
            assert get(f"{base}/healthz") == 200
        assert get(f"{base}/api/v1/tenant/", **{"X-Request-ID": "req-web-1"}) == 401

        samples = scrape(f"{base}/metrics")
        assert value(samples, "django_http_requests_total_by_method_total", method="GET") >= 22
        # Two workers wrote their own files; the scrape summed both.
        pids = {p.name.split("_")[-1] for p in (tmp_path / "prometheus").glob("counter_*.db")}
        assert len(pids) >= 2, pids
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    assert server.returncode == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    gunicorn_events = [line["event"] for line in lines if line["logger"] == "gunicorn.error"]
    assert any(event.startswith("Starting gunicorn") for event in gunicorn_events)
    assert any(event.startswith("Shutting down") for event in gunicorn_events)
    refused = [line for line in lines if line.get("request_id") == "req-web-1"]
    assert {line["logger"] for line in refused} == {"signalbox.access", "django.request"}


def test_gunicorn_refuses_to_start_on_a_bad_configuration(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "python:project.gunicorn", "project.wsgi"],
        cwd=ROOT, env=gunicorn_env(tmp_path, PORT=str(free_port()), CELERY_BROKER_URL="kafka://broker:9092"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "CELERY_BROKER_URL has scheme 'kafka'" in result.stdout + result.stderr
