"""Processing one recorded event on the `events` queue (`event_process`, called by its task).

Processing an event runs, in one transaction on the locked event row: every enabled rule whose
type pattern matches (each logged as a `RuleExecution`), then the fan-out to subscribed webhook
endpoints (one `WebhookMessage` each). What those create is published after commit, and the
event is marked processed in the same transaction, so a redelivered task finds nothing to do.

A failing action is caught per action (the rule execution records it). What is not is a failure
of the processing itself (the database refusing a write, a bug outside any action): that attempt
rolls back whole, and the event is retried after `SIGNALBOX_EVENT_RETRY_SCHEDULE[n]` seconds, or
ends `dead` with its `last_error` once the schedule is spent. Each attempt is counted in its own
short transaction before it starts, so an attempt lost with its worker counts too: no event loops
for ever. Dead events are listed (`?status=dead`) and replayed by id or in bulk, audited.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.events.models import Event, EventStatus
from apps.events.services.events import publish_processing
from apps.events.services.rules import rules_run
from apps.events.services.webhooks import messages_fan_out
from apps.observability import metrics

log = logging.getLogger(__name__)

# Retries due within this ride on a Celery countdown (well inside the broker's visibility timeout);
# later ones wait in PostgreSQL (`next_attempt_at`) for the sweeper.
COUNTDOWN_MAX_SECONDS = 300
LAST_ERROR_MAX_CHARS = 2000


def max_attempts() -> int:
    """The first attempt plus one per delay of `SIGNALBOX_EVENT_RETRY_SCHEDULE`."""
    return len(settings.SIGNALBOX_EVENT_RETRY_SCHEDULE) + 1


def _attempt_lease() -> timedelta:
    # An attempt still running after the hard time limit was killed with its worker.
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)


def _publish_retry(event_id: Any, *, delay: float) -> None:
    """A retry due soon rides a countdown; a later one waits for the sweeper (no long ETAs)."""
    if delay <= COUNTDOWN_MAX_SECONDS:
        publish_processing(event_id, countdown=delay)


def _attempt_start(event_id: str) -> int | None:
    """Counts an attempt in its own transaction before it runs; returns its number, or None when
    the event is finished, taken, or not due yet.

    The count is committed first so that an attempt lost with its worker still counts: a pending
    event out of attempts is marked dead here instead of being tried again.
    """
    now = timezone.now()
    with transaction.atomic():
        event = (
            Event.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk=event_id, status=EventStatus.PENDING)
            .only("pk", "attempts", "next_attempt_at", "last_error")
            .first()
        )
        if event is None or (event.next_attempt_at is not None and event.next_attempt_at > now):
            return None
        if event.attempts >= max_attempts():
            error = f"Attempt {event.attempts} was lost: its worker stopped before it finished."
            if event.last_error:
                error = f"{error} Before that: {event.last_error}"[:LAST_ERROR_MAX_CHARS]
            Event.objects.filter(pk=event.pk).update(
                status=EventStatus.DEAD, dead_at=now, next_attempt_at=None, last_error=error
            )
            metrics.DEAD_LETTERS.labels(kind="event", channel="event").inc()
            return None
        attempt = event.attempts + 1
        Event.objects.filter(pk=event.pk).update(attempts=attempt, next_attempt_at=now + _attempt_lease())
    return attempt


def _attempt_failed(event_id: str, *, attempt: int, error: BaseException) -> None:
    """Records a failed attempt: the next one after the schedule's delay, or dead when none is left."""
    now = timezone.now()
    text = f"{type(error).__name__}: {error}"[:LAST_ERROR_MAX_CHARS]
    schedule = settings.SIGNALBOX_EVENT_RETRY_SCHEDULE
    with transaction.atomic():
        still_ours = Event.objects.filter(pk=event_id, status=EventStatus.PENDING, attempts=attempt)
        if attempt >= max_attempts():
            if still_ours.update(status=EventStatus.DEAD, dead_at=now, next_attempt_at=None, last_error=text):
                metrics.DEAD_LETTERS.labels(kind="event", channel="event").inc()
            return
        delay = float(schedule[attempt - 1])
        if still_ours.update(next_attempt_at=now + timedelta(seconds=delay), last_error=text):
            _publish_retry(event_id, delay=delay)


def event_process(*, event_id: str) -> bool:
    """Runs the rules and the webhook fan-out of one event; False if it was done, taken, not due, or failed.

    A failure of the processing is recorded on the event (see the module docstring), not raised:
    the event's own retry schedule, not Celery's redelivery, decides what happens next.
    """
    attempt = _attempt_start(event_id)
    if attempt is None:
        return False
    try:
        with transaction.atomic():
            event = (
                # Waits rather than skips: the attempt is ours, and any other lock on the row (a duplicate
                # message's `_attempt_start`, a purge batch) is short. of=self: not the joined tenant row.
                Event.objects.select_for_update(of=("self",))
                .select_related("tenant")
                .filter(pk=event_id, status=EventStatus.PENDING, attempts=attempt)
                .first()
            )
            if event is None:
                return False
            rules_run(event=event)
            messages_fan_out(event=event)
            Event.objects.filter(pk=event.pk).update(
                status=EventStatus.PROCESSED, processed_at=timezone.now(), next_attempt_at=None, last_error=""
            )
    except Exception as exc:
        log.exception("event processing failed", extra={"event": str(event_id), "attempt": attempt})
        _attempt_failed(event_id, attempt=attempt, error=exc)
        return False
    return True
