"""Publishing Celery tasks only after the surrounding transaction commits.

An intent is a row first; its task is sent in `transaction.on_commit`, so a rolled-back
request never leaves a task behind. A crash between COMMIT and the publish leaves the row
unpublished, and the sweeper publishes it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from django.db import transaction

log = logging.getLogger(__name__)


def publish_on_commit(task: Task, *args: Any, using: str | None = None, **options: Any) -> None:
    """`task.apply_async(args=args, **options)` after commit; a failed publish is left to the sweeper."""

    def send() -> None:
        try:
            task.apply_async(args=args, **options)
        except Exception:  # the broker is down: the row stays unpublished and the sweeper retries.
            log.exception("publish failed; the sweeper will retry", extra={"task": task.name})

    transaction.on_commit(send, using=using)
