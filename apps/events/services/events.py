"""Recording events (clients: `event_record`; Signalbox: `event_emit`), publishing their processing
on the `events` queue, the sweeper of lost publishes, replays and retention.

Processing one event (its rules, its webhook fan-out, its retries) is in `processing.py`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from apps.core import ports
from apps.core.actors import SYSTEM, Actor
from apps.core.errors import Conflict, Unprocessable
from apps.core.partitions import partitions_drop_expired
from apps.core.publish import publish, publish_on_commit
from apps.core.retention import PurgeReport, RetentionPolicy, purge
from apps.events import types
from apps.events.models import Event, EventSource, EventStatus, MessageStatus, Rule, WebhookEndpoint
from apps.events.operations import EVENT_PARTITIONED_TABLES
from apps.observability import metrics
from apps.observability.audit import audit_record

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_BULK_REPLAY = 1000


def _json_safe(payload: Any) -> Any:
    """UUIDs, datetimes and Decimals become strings, so callers can pass what they hold."""
    return json.loads(json.dumps(payload if payload is not None else {}, default=str))


def publish_processing(event_id: Any, *, countdown: float = 0) -> None:
    """Publishes the event's processing once the transaction commits (after `countdown` seconds)."""
    options: dict[str, Any] = {"queue": "events"}
    if countdown > 0:
        options["countdown"] = countdown
    publish_on_commit("signalbox.events.process", str(event_id), **options)


def event_record(
    *,
    tenant: Any,
    type: str,
    subject: Any = None,
    payload: Any = None,
    actor: Any = None,
    recorded_by: Actor | None = None,
) -> Event:
    """A client's event (`POST /api/v1/events/`): Signalbox's own namespaces are refused.

    `actor` is who did it as the client names them (`{"type", "id"}`, validated); `recorded_by`
    is who called the API (the key). The event's actor is the client's, else the caller, and
    keeps the caller under `recorded_by` either way, so rules can trust one and read the other.
    """
    types.check_type(type, reserved_allowed=False)
    named = types.check_actor(actor) if actor is not None else None
    subject_type, subject_id = types.subject_of(subject)
    payload = _json_safe(payload)
    if not isinstance(payload, dict):
        raise Unprocessable("The payload is a JSON object.", code="invalid_payload", fields={"payload": ["Object."]})
    if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise Unprocessable(f"The payload is larger than {MAX_PAYLOAD_BYTES // 1024} KiB.", code="payload_too_large")
    event = Event.objects.create(
        tenant=tenant,
        type=type,
        subject_type=subject_type,
        subject_id=subject_id,
        payload=payload,
        actor=_api_actor(named, recorded_by),
        source=EventSource.API,
    )
    ports.event_recorded(event)  # e.g. apps.flows ends the flows this event cancels
    metrics.INTENTS.labels(kind="event").inc()
    publish_processing(event.pk)
    return event


def _api_actor(named: dict[str, str] | None, recorded_by: Actor | None) -> dict[str, Any]:
    if recorded_by is None:
        return dict(named or {})
    caller = recorded_by.as_dict()
    return {**(named or caller), "recorded_by": caller}


@dataclass(frozen=True)
class Listeners:
    """The event type patterns a tenant's enabled rules and webhook endpoints listen to."""

    patterns: tuple[str, ...]

    def observe(self, event_type: str) -> bool:
        return types.any_matches(self.patterns, event_type)


def listeners_of(tenant: Any) -> Listeners:
    """Two small indexed queries; callers handling a batch ask once per tenant."""
    tenant_id = getattr(tenant, "pk", tenant)
    patterns = list(Rule.objects.filter(tenant_id=tenant_id, enabled=True).values_list("event_type", flat=True))
    for subscribed in WebhookEndpoint.objects.filter(tenant_id=tenant_id, enabled=True).values_list(
        "event_types", flat=True
    ):
        patterns.extend(subscribed or ["*"])  # an endpoint with no types receives every event
    return Listeners(tuple(patterns))


def is_observed(tenant: Any, event_type: str) -> bool:
    """Whether an enabled rule or webhook endpoint of the tenant listens to `event_type`."""
    return listeners_of(tenant).observe(event_type)


def event_emit(
    *,
    tenant: Any,
    type: str,
    subject: Any = None,
    payload: Any = None,
    actor: dict[str, Any] | None = None,
    only_if_observed: bool = True,
    depth: int = 0,
) -> Event | None:
    """Puts one of Signalbox's own happenings on the bus, for rules and webhooks to act on.

    Call it inside the transaction that made the change (the event commits with it, and its
    processing is published after commit). `subject` is `{"type", "id"}`, a `(type, id)` pair
    or a model instance; `payload` any JSON-able mapping (UUIDs and datetimes become strings).
    When no enabled rule or endpoint of the tenant listens to `type`, nothing is written and
    None is returned: platform events cost nothing until someone subscribes
    (`only_if_observed=False` records it anyway, e.g. a workflow's own domain events). `depth`
    is how many rule actions led to it (`caused_depth`), for the rules' loop guard.
    """
    types.check_type(type, reserved_allowed=True)
    if only_if_observed and not is_observed(tenant, type):
        return None
    subject_type, subject_id = types.subject_of(subject)
    event = Event.objects.create(
        tenant_id=getattr(tenant, "pk", tenant),
        type=type,
        subject_type=subject_type,
        subject_id=subject_id,
        payload=_json_safe(payload),
        actor=_json_safe(actor or {"type": "system", "id": "signalbox"}),
        source=EventSource.SIGNALBOX,
        depth=depth,
    )
    publish_processing(event.pk)
    return event


def caused_depth(source: Any) -> int:
    """The depth of an event about something a rule made: the `depth` in the `source` the rule
    gave it (notifications keep it in `metadata["source"]`); 0 for anything else."""
    if isinstance(source, dict) and source.get("kind") == "rule":
        try:
            return max(int(source.get("depth", 1)), 0)
        except (TypeError, ValueError):
            return 1
    return 0


def events_sweep(*, older_than_seconds: int = 120, limit: int = 1000) -> int:
    """Republishes pending events due for two minutes that nobody took: a lost publish, a retry
    past the countdown range, or an attempt lost with its worker (once its lease has run out).
    Processed and dead events are never republished."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    due = models.Q(next_attempt_at__isnull=True, created_at__lt=cutoff) | models.Q(next_attempt_at__lt=cutoff)
    ids = list(
        Event.objects.filter(due, status=EventStatus.PENDING)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in ids:
        publish("signalbox.events.process", str(pk), queue="events")
    if ids:
        metrics.SWEEPER_RECOVERED.labels(kind="event").inc(len(ids))
    return len(ids)


# --- replay -------------------------------------------------------------------------------------------

_REPLAYED = {
    "status": EventStatus.PENDING,
    "attempts": 0,
    "next_attempt_at": None,
    "dead_at": None,
}


def event_replay(*, event: Event, actor: Actor = SYSTEM) -> Event:
    """Processes a dead event again, from a fresh schedule; its `last_error` stays until an attempt succeeds."""
    if event.status != EventStatus.DEAD:
        raise Conflict(f"Only dead events are replayed; this one is {event.status}.", code="not_replayable")
    with transaction.atomic():
        if Event.objects.filter(pk=event.pk, status=EventStatus.DEAD).update(**_REPLAYED) != 1:
            raise Conflict("The event changed meanwhile (already replayed?); reload it.", code="not_replayable")
        audit_record(
            action="event.replayed",
            tenant=event.tenant,
            actor=actor,
            target=event,
            data={"type": event.type, "attempts": event.attempts, "last_error": event.last_error[:500]},
        )
        publish_processing(event.pk)
    event.refresh_from_db()
    return event


def events_replay(
    *,
    tenant: Any,
    ids: list[uuid.UUID] | None = None,
    type: str | None = None,
    since: datetime | None = None,
    limit: int = MAX_BULK_REPLAY,
    actor: Actor = SYSTEM,
) -> list[Any]:
    """Replays the tenant's dead events (by id, type pattern or since a time; at most MAX_BULK_REPLAY).

    One audit entry lists what was replayed; none when nothing was.
    """
    query = models.Q(tenant=tenant, status=EventStatus.DEAD)
    if ids is not None:
        query &= models.Q(pk__in=ids)
    if since is not None:
        query &= models.Q(created_at__gte=since)
    if type is not None and type != "*":
        types.check_pattern(type, field="type")
        query &= models.Q(type__startswith=type[:-1]) if type.endswith(".*") else models.Q(type=type)
    with transaction.atomic():
        chosen = list(
            Event.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(query)
            .order_by("created_at")
            .values_list("pk", flat=True)[: min(limit, MAX_BULK_REPLAY)]
        )
        Event.objects.filter(pk__in=chosen, status=EventStatus.DEAD).update(**_REPLAYED)
        if chosen:
            audit_record(
                action="event.bulk_replayed",
                tenant=tenant,
                actor=actor,
                target_type=Event._meta.label_lower,
                data={
                    "count": len(chosen),
                    "ids": [str(pk) for pk in chosen],
                    "type": type,
                    "since": since.isoformat() if since is not None else None,
                },
            )
        for pk in chosen:
            publish_processing(pk)
    return chosen


def _event_model() -> type[Event]:
    return Event


def _still_needed() -> models.Q:
    # Events whose webhook messages are still being delivered.
    return models.Q(webhook_messages__status__in=[MessageStatus.PENDING, MessageStatus.SENDING])


def _attempt_ahead(now: datetime) -> models.Q:
    # A pending event with an attempt scheduled (or running): its retries are bounded, so only an
    # event with none ahead (its publish lost and never swept, say) is old enough to give up on.
    return models.Q(status=EventStatus.PENDING, next_attempt_at__gt=now)


def events_retention_policy() -> RetentionPolicy:
    """Events (with their rule executions, webhook messages and attempts) go after
    `tenant.settings["retention_days"]["events"]` days, else SIGNALBOX_EVENT_RETENTION_DAYS:
    processed, dead, and pending ones that old with no attempt ahead."""
    return RetentionPolicy(
        name="events",
        model=_event_model,
        default_days=settings.SIGNALBOX_EVENT_RETENTION_DAYS,
        keep=_still_needed,
        keep_at=_attempt_ahead,
        description="Processed and dead events, and pending ones with no attempt ahead, with what they caused.",
    )


def events_purge_report(*, max_seconds: float = 240.0) -> PurgeReport:
    """Deletes expired events in short batches; bounded in time, so reruns resume.

    The report says what went per table: events, and the rule executions, webhook messages and
    attempts deleted with them (as `signalbox.maintenance.purge` reports the notification tables).
    """
    return purge([events_retention_policy()], max_seconds=max_seconds)


def events_purge_run(*, max_seconds: float = 240.0) -> dict[str, Any]:
    """The beat job: on PostgreSQL, drops the events partitions past retention (with the same month
    of rule executions, messages and attempts), then deletes the rest in batches (SQLite, tenants
    with a shorter retention, partitions still holding an event that must stay)."""
    dropped = partitions_drop_expired(tables=[spec.table for spec in EVENT_PARTITIONED_TABLES])
    return {**events_purge_report(max_seconds=max_seconds).as_dict(), "partitions": dropped.as_dict()}


def events_purge(*, max_seconds: float = 240.0) -> int:
    """The events deleted by `events_purge_report`, for callers that only need the count."""
    return events_purge_report(max_seconds=max_seconds).deleted.get("events", 0)
