"""Waiting for the real worker to finish what a test started, before the database is flushed.

A test that leaves a fan-out or a send running when it ends races the teardown's TRUNCATE (a
deadlock, and a database left dirty for the next test). The `worker` fixture of this area's
conftests is the shared one plus this wait at teardown.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from django.utils import timezone


def busy() -> bool:
    from apps.notifications.models import Delivery, FanoutChunk, Notification
    from apps.tasks.models import ACTIVE, TaskExecution

    return (
        Notification.objects.filter(status__in=["accepted", "fanning_out"]).exists()
        or FanoutChunk.objects.filter(done_at__isnull=True).exists()
        or Delivery.objects.filter(status__in=["queued", "sending"]).exists()
        or TaskExecution.objects.filter(status__in=ACTIVE, run_after__lte=_soon()).exists()
    )


def _soon() -> datetime:
    return timezone.now() + timedelta(seconds=5)


def wait_until_idle(timeout: float = 30.0) -> None:
    """Polls until nothing is in flight (twice in a row, a moment apart), or gives up quietly."""
    deadline = time.monotonic() + timeout
    calm = 0
    while time.monotonic() < deadline and calm < 2:
        calm = calm + 1 if not busy() else 0
        time.sleep(0.2)
