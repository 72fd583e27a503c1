"""Diagnostic tasks (a worker liveness probe, a self-check of what a task sees) and the retention purge."""

from __future__ import annotations

import os
from typing import Any

from celery import shared_task
from django.db import connection

from apps.core import (
    context,
    retention_tasks,  # noqa: F401  (signalbox.maintenance.purge)
)


@shared_task(name="signalbox.maintenance.diagnose", queue="maintenance")
def diagnose() -> dict[str, Any]:
    """Reports the worker pid, its database session and the inherited correlation context."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()" if connection.vendor == "postgresql" else "SELECT 0")
        backend = cursor.fetchone()[0]
    return {"pid": os.getpid(), "db_session": backend, "context": context.current()}
