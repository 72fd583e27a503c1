"""Recording events (clients: `event_record`; Signalbox: `event_emit`) and processing them on the `events` queue.

Processing an event runs, in one transaction on the locked event row: every enabled rule whose
type pattern matches (each logged as a `RuleExecution`), then the fan-out to subscribed webhook
endpoints (one `WebhookMessage` each). What those create is published after commit, and the
event is marked processed in the same transaction, so a redelivered task finds nothing to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from apps.core.errors import Unprocessable
from apps.core.publish import publish_on_commit
from apps.core.retention import PurgeReport, RetentionPolicy, purge
from apps.events import types
from apps.events.models import Event, EventSource, EventStatus, MessageStatus, Rule, WebhookEndpoint
from apps.observability import metrics

MAX_PAYLOAD_BYTES = 256 * 1024


def _json_safe(payload: Any) -> Any:
    """UUIDs, datetimes and Decimals become strings, so callers can pass what they hold."""
    return json.loads(json.dumps(payload if payload is not None else {}, default=str))


def _publish(event: Event) -> None:
    from apps.events.tasks import process_event

    publish_on_commit(process_event, str(event.pk), queue="events")


def event_record(
    *,
    tenant: Any,
    type: str,
    subject: Any = None,
    payload: Any = None,
    actor: Any = None,
    recorded_by: dict[str, Any] | None = None,
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
    metrics.INTENTS.labels(kind="event").inc()
    _publish(event)
    return event


def _api_actor(named: dict[str, str] | None, recorded_by: dict[str, Any] | None) -> dict[str, Any]:
    if recorded_by is None:
        return dict(named or {})
    return {**(named or recorded_by), "recorded_by": recorded_by}


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
    _publish(event)
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


def event_process(*, event_id: str) -> bool:
    """Runs the rules and the webhook fan-out of one event; False if it was done (or is being done)."""
    from apps.events.services.rules import rules_run
    from apps.events.services.webhooks import messages_fan_out

    with transaction.atomic():
        event = (
            # of=self: locking the joined tenant row too would make concurrent events of one tenant skip each other.
            Event.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("tenant")
            .filter(pk=event_id, status=EventStatus.PENDING)
            .first()
        )
        if event is None:
            return False
        rules_run(event=event)
        messages_fan_out(event=event)
        Event.objects.filter(pk=event.pk).update(status=EventStatus.PROCESSED, processed_at=timezone.now())
    return True


def events_sweep(*, older_than_seconds: int = 120, limit: int = 1000) -> int:
    """Republishes events committed but never processed (a lost publish, a dead worker)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Event.objects.filter(status=EventStatus.PENDING, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    from apps.events.tasks import process_event

    for pk in ids:
        process_event.apply_async(args=(str(pk),), queue="events")
    if ids:
        metrics.SWEEPER_RECOVERED.labels(kind="event").inc(len(ids))
    return len(ids)


def _event_model() -> type[Event]:
    return Event


def _still_needed() -> models.Q:
    # Unprocessed events, and events whose webhook messages are still being delivered.
    in_flight = [MessageStatus.PENDING, MessageStatus.SENDING]
    return models.Q(status=EventStatus.PENDING) | models.Q(webhook_messages__status__in=in_flight)


def events_retention_policy() -> RetentionPolicy:
    """Events (with their rule executions, webhook messages and attempts) go after
    `tenant.settings["retention_days"]["events"]` days, else SIGNALBOX_EVENT_RETENTION_DAYS."""
    return RetentionPolicy(
        name="events",
        model=_event_model,
        default_days=settings.SIGNALBOX_EVENT_RETENTION_DAYS,
        keep=_still_needed,
    )


def events_purge_report(*, max_seconds: float = 240.0) -> PurgeReport:
    """Deletes expired events in short batches; bounded in time, so reruns resume.

    The report says what went per table: events, and the rule executions, webhook messages and
    attempts deleted with them (as `signalbox.maintenance.purge` reports the notification tables).
    """
    return purge([events_retention_policy()], max_seconds=max_seconds)


def events_purge(*, max_seconds: float = 240.0) -> int:
    """The events deleted by `events_purge_report`, for callers that only need the count."""
    return events_purge_report(max_seconds=max_seconds).deleted.get("events", 0)
