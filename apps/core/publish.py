"""Publishing Celery tasks only after the surrounding transaction commits.

An intent is a row first; its task is sent in `transaction.on_commit`, so a rolled-back
request never leaves a task behind. A crash between COMMIT and the publish leaves the row
unpublished, and the sweeper publishes it.

A task is named by its permanent dotted name (`"signalbox.notifications.send_batch"`), so a
service never imports its own app's `tasks.py`; a task object works too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task, current_app
from django.db import transaction

log = logging.getLogger(__name__)


def publish_on_commit(
    task: Task | str,
    *args: Any,
    using: str | None = None,
    on_published: Callable[[], None] | None = None,
    **options: Any,
) -> None:
    """`apply_async(args=args, **options)` after commit (`send_task` for a name no module of this
    process registers); a failed publish is left to the sweeper. `on_published` runs once the
    broker took the message."""
    name = task if isinstance(task, str) else task.name

    def send() -> None:
        try:
            # The registered task when there is one: its own options apply, as with the object.
            target = current_app.tasks.get(name) if isinstance(task, str) else task
            if target is None:
                current_app.send_task(name, args=args, **options)
            else:
                target.apply_async(args=args, **options)
        except Exception:  # the broker is down: the row stays unpublished and the sweeper retries.
            log.exception("publish failed; the sweeper will retry", extra={"task": name})
            return
        if on_published is not None:
            on_published()

    transaction.on_commit(send, using=using)
