"""The dispatcher and the sweeper, both run by beat on the maintenance queue.

`dispatch_due` (every few seconds) publishes what has come due: scheduled notifications whose
time has come, and deliveries waiting in `pending` (retries, recovered rows) or `deferred`
(quiet hours) whose `next_attempt_at` has passed. Rows are taken with FOR UPDATE SKIP LOCKED
in batches, so two dispatchers never publish the same row.

`sweep` (every half minute) recovers what fell between the database and the broker: intents
committed but never fanned out, chunks published but never run, deliveries queued long ago
but never claimed, and claims whose lease ran out (the worker died mid-send). It also
completes dispatched notifications with nothing left in flight.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from apps.core.publish import publish_on_commit
from apps.notifications import conf
from apps.notifications.models import Delivery, DeliveryAttempt, FanoutChunk, Notification
from apps.notifications.services.announce import Audience, deliveries_announce
from apps.notifications.services.fanout import notification_fanout_settle
from apps.notifications.services.notifications import notification_complete_if_settled, queue_for
from apps.notifications.services.quiet_hours import deliveries_hold_for_quiet_hours
from apps.notifications.services.sending import reconciles, retry_policy_for
from apps.observability import metrics

log = logging.getLogger(__name__)

Status = Delivery.Status


def _publish_sends(rows: list[tuple[Any, str, str, Any]]) -> int:
    """Publishes send tasks on commit, one per (queue, channel) and batch; rows are (id, channel,
    queue, notification id). Each message names its deliveries' notifications too, so the claim
    looks only in their partitions."""
    size = conf.get().SEND_BATCH_SIZE
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for pk, channel, queue, notification_id in rows:
        groups[(queue, channel)].append((str(pk), str(notification_id)))
    for (queue, _), pairs in groups.items():
        for start in range(0, len(pairs), size):
            part = pairs[start : start + size]
            publish_on_commit(
                "signalbox.notifications.send_batch",
                [pk for pk, _ in part],
                sorted({n for _, n in part}),
                queue=queue,
            )
    return len(rows)


def _dispatch_scheduled(now: datetime, limit: int) -> int:
    with transaction.atomic():
        due = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(status=Notification.Status.SCHEDULED, scheduled_at__lte=now)
            .order_by("scheduled_at")
            .only("pk", "priority")[:limit]
        )
        for notification in due:
            Notification.objects.filter(pk=notification.pk, status=Notification.Status.SCHEDULED).update(
                status=Notification.Status.ACCEPTED, enqueued_at=now, updated_at=now
            )
            publish_on_commit(
                "signalbox.notifications.fan_out", str(notification.pk), queue=queue_for(notification.priority)
            )
    return len(due)


def _dispatch_deliveries(now: datetime, limit: int) -> int:
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status__in=Delivery.DUE, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", "channel", "notification__priority", "notification__status", "notification_id")[:limit]
        )
        if not rows:
            return 0
        cancelled = [pk for pk, _, _, status, _ in rows if status == Notification.Status.CANCELLED]
        live = [
            (pk, channel, queue_for(priority), notification_id)
            for pk, channel, priority, status, notification_id in rows
            if status != Notification.Status.CANCELLED
        ]
        if cancelled:
            Delivery.objects.filter(pk__in=cancelled, status__in=Delivery.DUE).update(
                status=Status.CANCELLED, next_attempt_at=None, failed_at=now
            )
        if live:  # a retry or replay coming due inside the recipient's quiet hours waits again
            held = deliveries_hold_for_quiet_hours(delivery_ids=[row[0] for row in live], now=now)
            live = [row for row in live if row[0] not in held]
        if live:
            Delivery.objects.filter(pk__in=[row[0] for row in live], status__in=Delivery.DUE).update(
                status=Status.QUEUED, queued_at=now, next_attempt_at=None
            )
            _publish_sends(live)
    return len(rows)


def dispatch_due(*, now: datetime | None = None) -> dict[str, int]:
    """Publishes due scheduled notifications and due deliveries; returns counts."""
    now = now or timezone.now()
    settings = conf.get()
    counts = {"notifications": _dispatch_scheduled(now, settings.DISPATCH_BATCH_SIZE), "deliveries": 0}
    for _ in range(settings.DISPATCH_MAX_BATCHES):
        taken = _dispatch_deliveries(now, settings.DISPATCH_BATCH_SIZE)
        counts["deliveries"] += taken
        if taken < settings.DISPATCH_BATCH_SIZE:
            break
    return counts


@dataclass
class SweepResult:
    intents: int = 0
    chunks: int = 0
    queued: int = 0
    leases: int = 0
    completed: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def _sweep_intents(now: datetime, after: timedelta, limit: int) -> int:
    with transaction.atomic():
        stale = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(status=Notification.Status.ACCEPTED)
            .filter(Q(enqueued_at__lt=now - after) | Q(enqueued_at__isnull=True))
            .only("pk", "priority")[:limit]
        )
        for notification in stale:
            Notification.objects.filter(pk=notification.pk).update(enqueued_at=now)
            publish_on_commit(
                "signalbox.notifications.fan_out", str(notification.pk), queue=queue_for(notification.priority)
            )
    return len(stale)


def _sweep_chunks(now: datetime, after: timedelta, limit: int) -> int:
    with transaction.atomic():
        stale = list(
            FanoutChunk.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(done_at__isnull=True, dead_at__isnull=True, published_at__lt=now - after)
            .values_list("pk", "notification__priority")[:limit]
        )
        if stale:
            FanoutChunk.objects.filter(pk__in=[pk for pk, _ in stale]).update(published_at=now)
        for pk, priority in stale:
            publish_on_commit("signalbox.notifications.fan_out_chunk", pk, queue=queue_for(priority))
    return len(stale)


def _sweep_queued(now: datetime, after: timedelta, limit: int) -> int:
    """Queued long ago and never claimed: the publish was lost. Hand them to the dispatcher
    (a late original task then finds them no longer `queued` and skips them)."""
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=Status.QUEUED, queued_at__lt=now - after)
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Delivery.objects.filter(pk__in=ids, status=Status.QUEUED).update(status=Status.PENDING, next_attempt_at=now)
    return len(ids)


def _sweep_leases(now: datetime, limit: int) -> int:
    """Claims past their lease: the worker died mid-send (a live sender renews its lease between
    requests). Each gets a `lost` attempt naming the provider its request may have reached, and:

    - the last attempt: `dead` (a message that kills its worker every time never loops);
    - a row marked in flight to a provider (`in_flight_provider`: the worker died during that
      request, so the provider may have the message): `unknown` for a provider whose callbacks can
      settle it (`RECONCILE_WINDOW_SECONDS` to report), else `pending` — either way the retry
      stays with that provider, whose idempotency key can absorb a copy;
    - a row with no request in flight: `pending`, due now (nothing was sent).

    Rows are locked (FOR UPDATE SKIP LOCKED) and the claim token cleared: a sender still alive
    can neither renew, send nor record them afterwards (services/sending.py)."""

    settings = conf.get()
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=Status.SENDING, lease_expires_at__lt=now)
            .values_list(
                "pk", "attempts", "in_flight_provider", "channel", "notification__tenant__settings", "tenant_id"
            )[:limit]
        )
        if not rows:
            return 0
        dead, unknown, pending = [], [], []
        for pk, attempts, in_flight, channel, tenant_settings, tenant_id in rows:
            if attempts >= retry_policy_for(tenant_settings, channel).max_attempts:
                dead.append((pk, channel, tenant_id))
            elif in_flight and reconciles(in_flight):
                unknown.append(pk)
            else:
                pending.append(pk)
        lost = "The worker holding the claim stopped before recording a result"
        taken = {"lease_expires_at": None, "claim_token": None, "error_code": "lease_expired"}
        sending = Delivery.objects.filter(status=Status.SENDING)
        sending.filter(pk__in=pending).update(
            status=Status.PENDING, next_attempt_at=now, last_error=f"{lost}.", **taken
        )
        sending.filter(pk__in=unknown).update(
            status=Status.UNKNOWN,
            next_attempt_at=now + timedelta(seconds=settings.RECONCILE_WINDOW_SECONDS),
            last_error=f"{lost}, during a request to its provider: the provider may have the message.",
            **taken,
        )
        sending.filter(pk__in=[pk for pk, _, _ in dead]).update(
            status=Status.DEAD,
            next_attempt_at=None,
            failed_at=now,
            last_error=f"{lost}. That was its last attempt.",
            **taken,
        )
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=pk,
                    number=attempts,
                    provider=in_flight,
                    outcome=DeliveryAttempt.Outcome.LOST,
                    error_code="lease_expired",
                    created_at=now,
                )
                for pk, attempts, in_flight, *_ in rows
            ]
        )
        deliveries_announce((tenant_id, pk, Status.DEAD) for pk, _, tenant_id in dead)
    for _, channel, _ in dead:
        metrics.DEAD_LETTERS.labels(kind="delivery", channel=channel).inc()
    return len(rows)


def _sweep_completion(now: datetime, limit: int) -> int:
    done = 0
    audience = Audience()
    dispatched = Notification.objects.filter(status=Notification.Status.DISPATCHED)
    for pk, tenant_id in dispatched.values_list("pk", "tenant_id")[:limit]:
        done += notification_complete_if_settled(notification_id=pk, tenant_id=tenant_id, now=now, audience=audience)
    # Fan-out that settled every chunk (done or dead) but lost the race to say so.

    open_chunks = FanoutChunk.objects.filter(notification=OuterRef("pk"), done_at__isnull=True, dead_at__isnull=True)
    for pk, tenant_id in (
        Notification.objects.filter(status=Notification.Status.FANNING_OUT)
        .exclude(Exists(open_chunks))
        .values_list("pk", "tenant_id")[:limit]
    ):
        notification_fanout_settle(notification_id=pk, now=now)
        done += notification_complete_if_settled(notification_id=pk, tenant_id=tenant_id, now=now, audience=audience)
    return done


def _in_batches(take: Callable[[int], int], limit: int, deadline: float) -> int:
    """Calls `take(limit)` (one transaction each) until a batch comes back short or the time
    budget is spent: the sweeper's pace follows the backlog instead of a fixed rows per run."""
    total = 0
    while True:
        taken = take(limit)
        total += taken
        if taken < limit or time.monotonic() >= deadline:
            return total


def sweep(*, now: datetime | None = None, limit: int | None = None, budget: float | None = None) -> SweepResult:
    """One sweeper run: each kind is taken back `limit` rows (SWEEP_BATCH_SIZE) per transaction,
    batch after batch until none is left or SWEEP_TIME_BUDGET_SECONDS is spent (the next run,
    30 s later, goes on from there)."""
    now = now or timezone.now()
    settings = conf.get()
    limit = limit or settings.SWEEP_BATCH_SIZE
    deadline = time.monotonic() + (budget if budget is not None else settings.SWEEP_TIME_BUDGET_SECONDS)
    intent_after = timedelta(seconds=settings.SWEEP_INTENT_AFTER_SECONDS)
    chunk_after = timedelta(seconds=settings.SWEEP_CHUNK_AFTER_SECONDS)
    queued_after = timedelta(seconds=settings.SWEEP_QUEUED_AFTER_SECONDS)
    result = SweepResult(
        intents=_in_batches(lambda n: _sweep_intents(now, intent_after, n), limit, deadline),
        chunks=_in_batches(lambda n: _sweep_chunks(now, chunk_after, n), limit, deadline),
        queued=_in_batches(lambda n: _sweep_queued(now, queued_after, n), limit, deadline),
        leases=_in_batches(lambda n: _sweep_leases(now, n), limit, deadline),
    )
    result.completed = _sweep_completion(now, limit)
    for kind in ("intents", "chunks", "queued", "leases"):
        count = getattr(result, kind)
        if count:
            metrics.SWEEPER_RECOVERED.labels(kind=f"notification_{kind}").inc(count)
            log.warning("sweeper recovered notification rows", extra={"kind": kind, "count": count})
    return result
