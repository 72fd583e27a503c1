"""The Celery app. Every setting lives in project/settings.py under `CELERY_`; why each is set: docs/architecture.md."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

from workers import broker
from workers.queues import DEFAULT_QUEUE, task_queues
from workers.routing import route_task


@worker_init.connect
def _survive_broker_restarts(**_: Any) -> None:
    # A broker restart must never end a worker (workers/broker.py). Patched when a worker starts,
    # not at import, so the API process does not import the Redis transport it never consumes from.
    broker.install()


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("signalbox")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_finalize.connect
def _publish_on_one_client(**_: Any) -> None:
    # Every process that publishes (the API's, a worker's) finalizes the app first (workers/broker.py).
    broker.install_publish_client()


def _configure() -> None:
    app.conf.task_queues = task_queues()
    app.conf.task_default_queue = DEFAULT_QUEUE
    app.conf.task_routes = (route_task,)
    app.conf.task_create_missing_queues = False


_configure()
app.autodiscover_tasks()

import workers.signals  # noqa: E402,F401  (connects the worker signal handlers)
from apps.observability.workers import WorkerHeartbeat  # noqa: E402  (and logging, task metrics, /metrics)

app.steps["worker"].add(WorkerHeartbeat)
