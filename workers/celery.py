"""The Celery app. Every setting lives in project/settings.py under `CELERY_`; why each is set: docs/architecture.md."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("signalbox")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _configure() -> None:
    from workers.queues import DEFAULT_QUEUE, task_queues
    from workers.routing import route_task

    app.conf.task_queues = task_queues()
    app.conf.task_default_queue = DEFAULT_QUEUE
    app.conf.task_routes = (route_task,)
    app.conf.task_create_missing_queues = False


_configure()
app.autodiscover_tasks()

import workers.signals  # noqa: E402,F401  (connects the worker signal handlers)
from apps.observability.workers import WorkerHeartbeat  # noqa: E402  (and logging, task metrics, /metrics)

app.steps["worker"].add(WorkerHeartbeat)
