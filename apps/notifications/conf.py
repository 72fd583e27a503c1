"""Typed access to the notification settings (`SIGNALBOX_NOTIFICATIONS` in project/settings.py).

Every knob has a default here, so the app runs with nothing configured; a bad value raises
`ImproperlyConfigured` on first use instead of misbehaving later.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class NotificationSettings:
    # Recipients per fan-out chunk task (one transaction, a constant number of queries each).
    FANOUT_CHUNK_SIZE: int = 2000
    # Delivery ids per send task; adapters without a batch API are called one message at a time.
    SEND_BATCH_SIZE: int = 500
    # A send task hands the rest of its batch to a new task after this many seconds, so a slow
    # provider never runs into the task time limit with rows claimed.
    SEND_TIME_BUDGET_SECONDS: int = 120
    # A claim outlives the longest possible task (CELERY_TASK_TIME_LIMIT), so an expired lease
    # means the worker is gone, never that it is still sending.
    SEND_LEASE_SECONDS: int = 420
    MAX_ATTEMPTS: int = 6
    RETRY_BASE_SECONDS: float = 15.0
    RETRY_CAP_SECONDS: float = 3600.0
    # Explicit audiences in one POST; larger audiences go through a topic.
    MAX_RECIPIENTS_PER_REQUEST: int = 10000
    MAX_BULK_UPSERT: int = 10000
    DEDUP_WINDOW_SECONDS: int = 3600
    INBOX_TOKEN_TTL_SECONDS: int = 3600
    INBOX_TOKEN_MAX_TTL_SECONDS: int = 86400
    # Rows per dispatcher transaction and how many such batches one run may take.
    DISPATCH_BATCH_SIZE: int = 500
    DISPATCH_MAX_BATCHES: int = 20
    # The sweeper's patience before it re-publishes something.
    SWEEP_INTENT_AFTER_SECONDS: int = 60
    SWEEP_CHUNK_AFTER_SECONDS: int = 300
    SWEEP_QUEUED_AFTER_SECONDS: int = 900


def get() -> NotificationSettings:
    raw: dict[str, Any] = dict(getattr(settings, "SIGNALBOX_NOTIFICATIONS", {}) or {})
    known = {f.name: f for f in fields(NotificationSettings)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ImproperlyConfigured(f"SIGNALBOX_NOTIFICATIONS has unknown keys: {', '.join(unknown)}.")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        kind = int if known[name].type in ("int", int) else float
        try:
            values[name] = kind(value)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"SIGNALBOX_NOTIFICATIONS[{name!r}] must be a number.") from exc
        if values[name] <= 0:
            raise ImproperlyConfigured(f"SIGNALBOX_NOTIFICATIONS[{name!r}] must be positive.")
    return NotificationSettings(**values)
