"""Notifications on the platform's clock: rescheduling a scheduled send, and recurring sends.

A notification with `scheduled_at` in the future is recorded `scheduled`; nothing about it runs
until the dispatcher (`dispatch.dispatch_due`, beat every 5 s) takes it, due, with `FOR UPDATE
SKIP LOCKED` through the partial index `notif_notification_due` (`scheduled_at WHERE status =
'scheduled'`). Until then it can be cancelled (`notification_cancel`) or moved
(`notification_reschedule`, a compare-and-set on `status = 'scheduled'`, so it either lands
before the dispatcher takes the row or is refused with `not_reschedulable`).

Recurring sends are the tasks app's schedules (`POST /api/v1/schedules/`) of kind
`notification`, defined here and registered by `NotificationsConfig.ready()` through the tasks
app's seam (`apps/tasks/schedule_kinds.py`): the target is
what `POST /api/v1/notifications/` takes (`template` or `content`, `payload`, `recipients` or
`topic`, `channels`, `priority`, `category`, `digest`). Each tick records a tracked execution (kind
`intent`, claimed with the unique (schedule, scheduled_for) of the tasks app, so a second beat
does nothing) and the notification, idempotent on `schedule:<id>:<tick>` besides.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict
from apps.notifications.models import Notification
from apps.notifications.serializers import notification_url
from apps.notifications.services.digest import digest_rule_errors
from apps.notifications.services.notifications import _check, notification_create
from apps.observability.audit import audit_record
from apps.tasks.models import TaskExecution
from apps.tasks.services import execution_create_for_intent, execution_mark_running, execution_mark_succeeded

SCHEDULE_KIND = "notification"
SCHEDULED_SEND = "signalbox.notifications.scheduled_send"
TARGET_FIELDS = (
    "template",
    "content",
    "category",
    "payload",
    "recipients",
    "topic",
    "channels",
    "priority",
    "digest",
    "metadata",
)


# --- Rescheduling --------------------------------------------------------------------------------


def notification_reschedule(
    *, notification: Notification, scheduled_at: datetime, actor: Actor = SYSTEM
) -> Notification:
    """Moves a `scheduled` notification to another time (a past time: sent at the next dispatcher run).

    Raises Conflict `not_reschedulable` once the dispatcher took it (or it was cancelled).
    """
    if not isinstance(scheduled_at, datetime) or timezone.is_naive(scheduled_at):
        raise ApplicationError(
            "Give scheduled_at with a time zone.",
            code="validation_error",
            fields={"scheduled_at": ["Give a time zone (e.g. 2030-01-01T09:00:00Z)."]},
        )
    now = timezone.now()
    with transaction.atomic():
        previous = Notification.objects.filter(pk=notification.pk).values_list("scheduled_at", flat=True).first()
        moved = Notification.objects.filter(pk=notification.pk, status=Notification.Status.SCHEDULED).update(
            scheduled_at=scheduled_at, updated_at=now
        )
        current = Notification.objects.select_related("tenant").get(pk=notification.pk)
        if not moved:
            raise Conflict(
                f"The notification is {current.status}; only a scheduled notification can be rescheduled.",
                code="not_reschedulable",
            )
        audit_record(
            action="notification.rescheduled",
            tenant=current.tenant,
            actor=actor,
            target=current,
            data={"from": previous.isoformat() if previous else None, "to": scheduled_at.isoformat()},
        )
    return current


# --- Recurring sends: the "notification" schedule kind ------------------------------------------


def _target_error(exc: ApplicationError) -> ApplicationError:
    return ApplicationError(exc.message, code=exc.code, fields={"target": exc.fields or [exc.message]})


def schedule_target_validate(tenant: Any, target: Any) -> dict[str, Any]:
    """The target to store: the notification's fields, validated as `POST /notifications/` would."""
    if not isinstance(target, Mapping):
        raise ApplicationError(
            "The target is the notification to send, as POST /api/v1/notifications/ takes it.",
            code="validation_error",
            fields={"target": ['Expected {"template": ..., "payload": {...}, "recipients": [...] or "topic": ...}.']},
        )
    unknown = sorted(set(target) - set(TARGET_FIELDS))
    if unknown:
        raise ApplicationError(
            f"Unknown target keys: {', '.join(unknown)}.",
            code="validation_error",
            fields={"target": [f"Unknown keys: {', '.join(unknown)}; use {', '.join(TARGET_FIELDS)}."]},
        )
    stored = {k: target[k] for k in TARGET_FIELDS if k in target and target[k] is not None}
    stored.setdefault("payload", {})
    try:
        _check(
            tenant=tenant,
            template=stored.get("template"),
            content=stored.get("content"),
            category=stored.get("category"),
            payload=stored["payload"],
            recipients=stored.get("recipients"),
            topic=stored.get("topic"),
            channels=stored.get("channels"),
            priority=stored.get("priority", Notification.Priority.NORMAL),
            scheduled_at=None,
            dedup_window_seconds=None,
        )
    except ApplicationError as exc:
        raise _target_error(exc) from exc
    _, problems = digest_rule_errors(stored.get("digest"), None)
    if problems:
        raise ApplicationError(
            "The digest rule is invalid.", code="validation_error", fields={"target": {"digest": problems}}
        )
    if not isinstance(stored.get("metadata", {}), Mapping):
        raise ApplicationError(
            "metadata must be an object.", code="validation_error", fields={"target": {"metadata": ["An object."]}}
        )
    return stored


def _tick_key(schedule: Any, tick: datetime) -> str:
    return f"schedule:{schedule.id}:{tick.strftime('%Y%m%dT%H%M%SZ')}"


def schedule_fire_notification(schedule: Any, tick: datetime) -> Any:
    """One tick of a notification schedule: claims the tick, records the notification, ends the run.

    Runs inside the tasks app's transaction (schedule_fire); the tick claim comes first, so a
    second beat's run fails on the unique (schedule, scheduled_for) before writing anything else.
    """
    target: dict[str, Any] = dict(schedule.target)
    execution = execution_create_for_intent(
        tenant=schedule.tenant,
        name=SCHEDULED_SEND,
        input=target,
        actor=Actor(kind="schedule", id=str(schedule.id)),
        queue="notifications.default",
    )
    TaskExecution.objects.filter(pk=execution.pk).update(schedule=schedule, scheduled_for=tick)
    metadata = {
        **dict(target.pop("metadata", None) or {}),
        "schedule": {"id": str(schedule.id), "tick": tick.isoformat()},
    }
    notification = notification_create(
        tenant=schedule.tenant, idempotency_key=_tick_key(schedule, tick), metadata=metadata, **target
    )
    execution_mark_running(execution_id=execution.pk)
    execution_mark_succeeded(
        execution_id=execution.pk,
        result={
            "notification": str(notification.pk),
            "url": notification_url(notification),
            "status": notification.status,
        },
    )
    execution.refresh_from_db()
    return execution
