"""What a Celery worker (and beat) does to be seen: logs, task metrics, its metrics endpoint, a heartbeat.

Connected by workers/celery.py (signals at import, `WorkerHeartbeat` as a worker bootstep):

- start: the configuration checks (checks.py) run in the worker's main process and in beat; an
  error stops the process with a message naming the setting.
- logging: a `task received` line is written with the task's inherited context (Celery's
  `setup_logging` signal, which applies project/logging.py, is connected in workers/signals.py).
- metrics: every task's final state, run time and the tasks running now, per task name and queue
  (apps/observability/metrics.py). Prefork children write to the Prometheus multiprocess directory
  (`PROMETHEUS_MULTIPROC_DIR`, set in the environment before the worker starts); the main process
  clears it at start and serves it on `WORKER_METRICS_PORT` (apps/observability/exporter.py).
  A child that exits marks itself dead; one that was killed is reaped at the next scrape.
- liveness: `WorkerHeartbeat` touches `WORKER_HEARTBEAT_FILE` from the worker's event loop;
  `python -m workers.probe` fails when it goes stale (a wedged or dead worker).
- tracing: OpenTelemetry in each child when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (tracing.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import structlog
from celery import bootsteps, signals
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import multiprocess

from apps.core.context import HEADER as CONTEXT_HEADER
from apps.observability import metrics
from apps.observability.checks import check_configuration_or_fail
from apps.observability.exporter import clear_multiprocess_dir, multiprocess_registry, start_server
from apps.observability.tracing import configure_tracing

log = structlog.get_logger(__name__)

# Task id -> monotonic start time, in the child running the task.
_started: dict[str, float] = {}


# --- Start: refuse a bad configuration -----------------------------------------------------------


def _check_configuration_or_exit() -> None:
    """A process with a bad configuration stops here, naming the setting (apps/observability/checks.py).

    SystemExit, because Celery logs and swallows an Exception raised by a signal handler.
    """
    try:
        check_configuration_or_fail()
    except ImproperlyConfigured as exc:
        log.critical("refusing to start", reason=str(exc))
        raise SystemExit(str(exc)) from exc


@signals.worker_init.connect
def _check_configuration(**kwargs: Any) -> None:
    _check_configuration_or_exit()


# --- Logging -------------------------------------------------------------------------------------


@signals.task_received.connect
def _log_task_received(request: Any = None, **kwargs: Any) -> None:
    """Celery's own "received" line is written before the context is known; this one carries it."""
    if request is None:
        return
    inherited = (request.request_dict or {}).get(CONTEXT_HEADER) or {}
    # A task published by another task inherits its parent's ids too: this task's own win.
    fields = {k: v for k, v in inherited.items() if isinstance(v, (str, int))}
    fields.update(celery_task_id=request.id, task_name=request.name)
    if getattr(request, "eta", None):
        fields["eta"] = str(request.eta)
    log.info("task received", **fields)


# --- Task metrics ------------------------------------------------------------------------------


def _queue_of(task: Any) -> str:
    delivery_info = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return str(delivery_info.get("routing_key") or "")


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    if task_id is None or task is None:
        return
    _started[task_id] = time.monotonic()
    metrics.WORKER_ACTIVE_TASKS.labels(queue=_queue_of(task)).inc()


@signals.task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **kwargs: Any) -> None:
    if task_id is None or task is None:
        return
    queue = _queue_of(task)
    started = _started.pop(task_id, None)
    if started is not None:
        metrics.WORKER_ACTIVE_TASKS.labels(queue=queue).dec()
        metrics.CELERY_TASK_RUNTIME.labels(task=task.name, queue=queue).observe(time.monotonic() - started)
    metrics.CELERY_TASKS.labels(task=task.name, queue=queue, state=(state or "unknown").lower()).inc()


@signals.after_task_publish.connect
def _task_published(sender: str | None = None, routing_key: str | None = None, **kwargs: Any) -> None:
    metrics.CELERY_TASKS_PUBLISHED.labels(task=sender or "", queue=routing_key or "").inc()


# --- The worker's metrics endpoint ------------------------------------------------------------


def _multiprocess_dir() -> Path | None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(path) if path else None


@signals.worker_init.connect
def _clear_multiprocess_dir(**kwargs: Any) -> None:
    """Clears a previous run's files before any child is forked (each worker has its own directory)."""
    directory = _multiprocess_dir()
    if directory is not None:
        clear_multiprocess_dir(directory)


_server: Any = None


@signals.worker_ready.connect
def _start_metrics_endpoint(**kwargs: Any) -> None:
    """Serves the sum of every child's metrics on WORKER_METRICS_PORT (main process only)."""
    global _server
    directory = _multiprocess_dir()
    if not settings.WORKER_METRICS_PORT or _server is not None:
        return
    if directory is None:
        log.warning("WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: no worker metrics endpoint")
        return
    _server = start_server(
        port=settings.WORKER_METRICS_PORT, addr=settings.METRICS_ADDR, registry=multiprocess_registry(directory)
    )
    log.info("metrics endpoint listening", port=settings.WORKER_METRICS_PORT, multiprocess_dir=str(directory))


@signals.worker_shutdown.connect
def _stop_metrics_endpoint(**kwargs: Any) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server = None


@signals.worker_process_shutdown.connect
def _mark_child_dead(pid: int | None = None, **kwargs: Any) -> None:
    """A prefork child leaving: its live gauges (tasks running now) must stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid or os.getpid())


# --- Tracing -----------------------------------------------------------------------------------


@signals.worker_process_init.connect
def _trace_worker_child(**kwargs: Any) -> None:
    # Per child: the exporter's background thread does not survive a fork.
    configure_tracing(service_name="signalbox-worker")


@signals.beat_init.connect
def _start_beat(**kwargs: Any) -> None:
    _check_configuration_or_exit()
    configure_tracing(service_name="signalbox-beat")


# --- Liveness ----------------------------------------------------------------------------------


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Touches `WORKER_HEARTBEAT_FILE` every `WORKER_HEARTBEAT_INTERVAL` seconds from the worker's timer.

    With the prefork pool the timer runs in the main process's event loop, the one that takes
    messages from the broker and hands them to children: if that loop stalls, the file goes stale
    and `python -m workers.probe --max-age N` fails, so Kubernetes restarts the pod. The file is
    left in place at shutdown: a worker draining its tasks is still alive.
    """

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = Path(settings.WORKER_HEARTBEAT_FILE) if settings.WORKER_HEARTBEAT_FILE else None
        self.interval = float(settings.WORKER_HEARTBEAT_INTERVAL)
        self.tref: Any = None

    def touch(self) -> None:
        if self.path is not None:
            self.path.touch()

    def start(self, parent: Any) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.touch()
        self.tref = parent.timer.call_repeatedly(self.interval, self.touch, priority=10)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
