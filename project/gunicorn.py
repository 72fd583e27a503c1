"""gunicorn settings for the API: `gunicorn -c python:project.gunicorn project.wsgi`.

- Graceful shutdown: on SIGTERM gunicorn stops accepting, lets in-flight requests finish for up to
  `graceful_timeout` seconds, then exits. Kubernetes gives the pod `terminationGracePeriodSeconds`
  (longer), and a preStop sleep lets the Service stop routing to the pod before SIGTERM arrives.
- Metrics: with `PROMETHEUS_MULTIPROC_DIR` set, every gunicorn worker writes its metrics there and
  `/metrics` sums them (django-prometheus); the directory is cleared when the master starts and a
  worker's live gauges are dropped when it exits.
- Logs: gunicorn's own loggers go through project/logging.py (JSON); the access log is written by
  apps/core/middleware.py, so gunicorn's is off.
- Tracing: OpenTelemetry is set up in each worker after the fork (apps/observability/tracing.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django
from prometheus_client import multiprocess

from apps.observability.checks import check_configuration_or_fail
from apps.observability.exporter import clear_multiprocess_dir
from apps.observability.tracing import configure_tracing
from project.logging import logging_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 - inside a container
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Recycle workers now and then (jittered, so they don't all restart at once) to bound slow leaks.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "500"))
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", "/dev/shm" if Path("/dev/shm").is_dir() else None)  # noqa: S108
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")
accesslog = None
errorlog = "-"
# `gunicornc` talks to the master here; /tmp is the writable volume (the root filesystem is read-only).
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "/tmp/gunicorn.ctl")  # noqa: S108


def _logconfig() -> dict[str, Any]:
    config = logging_config(level=os.environ.get("LOG_LEVEL", "INFO"), fmt=os.environ.get("LOG_FORMAT", "json"))
    # gunicorn makes its loggers non-propagating; ours hand their records to the structured root handler.
    config["loggers"].update(
        {
            "gunicorn.error": {"level": "INFO", "propagate": True},
            "gunicorn.access": {"level": "WARNING", "propagate": True},
        }
    )
    return config


logconfig_dict = _logconfig()


def on_starting(server: Any) -> None:
    django.setup()
    check_configuration_or_fail()  # a bad configuration stops the master, naming the setting
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        clear_multiprocess_dir(Path(directory))


def post_fork(server: Any, worker: Any) -> None:
    configure_tracing(service_name="signalbox-web")


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
