"""Which tables retention purges, how long each keeps its rows, and what is never purged.

The policies of the notification pipeline live here; other apps own theirs beside their models and
run them with their own beat jobs, on the same engine (apps/core/retention.py).

Here (run by `signalbox.maintenance.purge`), children before parents:

- `deliveries`: deliveries except in-app, with their attempts and digest items;
- `inbox_read`, `inbox_unread`: in-app deliveries (the inbox), read or never read;
  for all three, never pending, queued, sending, deferred, digest or unknown, nor inside the
  notification's dedup window (a later duplicate must still find them);
- `digest_windows`: closed digest windows (never an open one);
- `notifications`: notifications with no delivery left (never scheduled, accepted, fanning out or
  dispatched; never younger than `IDEMPOTENCY_TTL_HOURS`, so an idempotency key still answers);
- `webhook_messages`: delivered and failed webhook messages with their attempts (never pending
  or sending);
- `idempotency_keys`: `Idempotency-Key` records past their `delete_at` (a whole-table pass).

Elsewhere, with their own jobs: `events` (apps/events, `signalbox.maintenance.purge_events`:
events with their rule executions and messages: processed, dead, or pending with no attempt ahead;
never with a message in flight),
`transition_intents` (apps/workflows, `signalbox.maintenance.purge_transition_intents`), `audit`
(apps/observability, `signalbox.maintenance.purge_audit`), and task executions (apps/tasks,
`signalbox.tasks.purge_expired`).

Task executions are not a `RetentionPolicy`: each one is told its `expires_at` when it finishes
(per status, task type and the tenant's `retention_days["task_results"]` / `["task_dead"]`, read by
`apps.core.retention.tenant_retention_days` like the policies' own), and their files must go with
them — their own purge does both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Exists, ExpressionWrapper, F, OuterRef, Q, Value
from django.db.models.lookups import GreaterThan

from apps.core.retention import RetentionPolicy

DELIVERY_IN_FLIGHT = ("pending", "queued", "sending", "deferred", "digest", "unknown")
NOTIFICATION_OPEN = ("scheduled", "accepted", "fanning_out", "dispatched")
WEBHOOK_IN_FLIGHT = ("pending", "sending")


def _delivery() -> type[models.Model]:
    from apps.notifications.models import Delivery

    return Delivery


def _notification() -> type[models.Model]:
    from apps.notifications.models import Notification

    return Notification


def _digest_window() -> type[models.Model]:
    from apps.notifications.models import DigestWindow

    return DigestWindow


def _webhook_message() -> type[models.Model]:
    from apps.events.models import WebhookMessage

    return WebhookMessage


def _idempotency_record() -> type[models.Model]:
    from apps.core.models import IdempotencyRecord

    return IdempotencyRecord


def _delivery_in_flight() -> Q:
    return Q(status__in=DELIVERY_IN_FLIGHT)


def _inside_dedup_window(now: datetime) -> Q:
    # A later notification with the same dedup_key looks for this row until its window ends.
    window_end = ExpressionWrapper(
        F("created_at") + F("notification__dedup_window_seconds") * Value(timedelta(seconds=1)),
        output_field=models.DateTimeField(),
    )
    return Q(dedup_key__isnull=False) & Q(GreaterThan(window_end, Value(now)))


def _notification_still_needed() -> Q:
    delivery = _delivery()
    return Q(status__in=NOTIFICATION_OPEN) | Q(Exists(delivery._default_manager.filter(notification_id=OuterRef("pk"))))


def _idempotency_window() -> timedelta:
    return timedelta(hours=getattr(settings, "IDEMPOTENCY_TTL_HOURS", 24))


def notification_policies() -> list[RetentionPolicy]:
    """The policies `signalbox.maintenance.purge` runs, children before parents."""
    return [
        RetentionPolicy(
            name="deliveries",
            model=_delivery,
            default_days=30,
            scope=lambda: ~Q(channel="in_app"),
            keep=_delivery_in_flight,
            keep_at=_inside_dedup_window,
            description="Deliveries (except the in-app inbox), with their attempts and digest items.",
        ),
        RetentionPolicy(
            name="inbox_read",
            model=_delivery,
            default_days=90,
            scope=lambda: Q(channel="in_app", read_at__isnull=False),
            keep=_delivery_in_flight,
            keep_at=_inside_dedup_window,
            description="In-app inbox items the recipient has read.",
        ),
        RetentionPolicy(
            name="inbox_unread",
            model=_delivery,
            default_days=180,
            scope=lambda: Q(channel="in_app", read_at__isnull=True),
            keep=_delivery_in_flight,
            keep_at=_inside_dedup_window,
            description="In-app inbox items never read.",
        ),
        RetentionPolicy(
            name="digest_windows",
            model=_digest_window,
            default_days=30,
            keep=lambda: Q(status="open"),
            description="Closed digest windows (the digests sent stay as notifications).",
        ),
        RetentionPolicy(
            name="notifications",
            model=_notification,
            default_days=30,
            keep=_notification_still_needed,
            min_age=_idempotency_window,
            description="Notifications whose deliveries are all gone.",
        ),
        RetentionPolicy(
            name="webhook_messages",
            model=_webhook_message,
            default_days=30,
            keep=lambda: Q(status__in=WEBHOOK_IN_FLIGHT),
            description="Delivered and failed webhook messages, with their attempts.",
        ),
        RetentionPolicy(
            name="idempotency_keys",
            model=_idempotency_record,
            time_field="delete_at",
            default_days=0,
            per_tenant=False,
            description="Idempotency-Key records past their expiry.",
        ),
    ]


def other_policies() -> list[RetentionPolicy]:
    """The policies other apps own and run with their own jobs (for dry runs and operator runs)."""
    from apps.events.services.events import events_retention_policy
    from apps.observability.audit import audit_retention_policy
    from apps.workflows.services.transitions import intents_retention_policy

    return [events_retention_policy(), intents_retention_policy(), audit_retention_policy()]


def all_policies() -> list[RetentionPolicy]:
    return [*notification_policies(), *other_policies()]


def policy_names() -> list[str]:
    return [p.name for p in all_policies()]
