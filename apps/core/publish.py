"""Publishing Celery tasks by their permanent names, and only after the surrounding transaction commits.

An intent is a row first; its task is sent in `transaction.on_commit`, so a rolled-back
request never leaves a task behind. A crash between COMMIT and the publish leaves the row
unpublished, and the sweeper publishes it.

A service names the task it publishes (`"signalbox.notifications.send_batch"`) instead of
importing its app's `tasks.py`: `tasks.py` imports the services, never the reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task, current_app
from django.db import transaction

log = logging.getLogger(__name__)


def publish(task: str | Task, *args: Any, **options: Any) -> None:
    """Sends the task (its permanent name) with `args` now; a broker error is the caller's.

    A task registered in this process is sent through its own `apply_async` (its declared options,
    eager mode, a test's stand-in); any other by name, routed like every message (workers/routing.py).
    """
    name = task if isinstance(task, str) else task.name
    registered = current_app.tasks.get(name)
    if registered is not None:
        registered.apply_async(args=args, **options)
    else:
        current_app.send_task(name, args=args, **options)


def publish_on_commit(
    task: str | Task,
    *args: Any,
    using: str | None = None,
    on_published: Callable[[], None] | None = None,
    **options: Any,
) -> None:
    """`publish(task, *args, **options)` after commit; a failed publish is left to the sweeper.
    `on_published` runs once the broker took the message."""
    name = task if isinstance(task, str) else task.name

    def send() -> None:
        try:
            publish(name, *args, **options)
        except Exception:  # the broker is down: the row stays unpublished and the sweeper retries.
            log.exception("publish failed; the sweeper will retry", extra={"task": name})
            return
        if on_published is not None:
            on_published()

    transaction.on_commit(send, using=using)
