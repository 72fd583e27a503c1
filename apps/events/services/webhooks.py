"""Outbound webhooks: endpoints and their secrets, the fan-out of events into messages, and delivery.

Delivery of one message (task `signalbox.webhooks.deliver`):
1. **Claim** it with a conditional UPDATE (`pending` and due → `sending`); a worker that loses
   the claim does nothing, so two workers never both send.
2. POST the frozen body, signed per Standard Webhooks, to the address the SSRF guard resolved
   (apps/core/net.py): no redirects, a timeout, at most 64 KiB of the answer read.
3. Record the attempt and the outcome in one transaction: 2xx delivered; 410 → the endpoint
   is disabled; anything else → the next step of the retry schedule, or dead when none is left.
   An endpoint failing without a success for `SIGNALBOX_WEBHOOK_DISABLE_AFTER_DAYS` is disabled.

Short waits ride on a Celery countdown; long ones wait in PostgreSQL (`next_attempt_at`) for the
dispatcher (`signalbox.webhooks.dispatch_due`, beat), which also reclaims messages whose worker
died mid-send and republishes ones whose task was lost (`dispatched_at` long past). Dead messages
are replayable (same `webhook-id`, schedule restarted; each replay is audited).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.core import crypto, signing
from apps.core.actors import SYSTEM, Actor
from apps.core.errors import Conflict, NotFound, Unprocessable
from apps.core.net import UnresolvableHost, UnsafeUrl, resolve_public_address, safe_post
from apps.core.publish import publish, publish_on_commit
from apps.events import types
from apps.events.models import (
    AttemptOutcome,
    Event,
    MessageStatus,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from apps.events.services.events import event_emit
from apps.observability import metrics
from apps.observability.audit import audit_record

log = logging.getLogger(__name__)

RESPONSE_EXCERPT_CHARS = 1024
# A countdown may fire a little before `next_attempt_at` by the clock of another machine.
CLAIM_TOLERANCE = timedelta(seconds=2)
MAX_EVENT_TYPES = 100
MAX_BULK_REPLAY = 1000


# --- endpoints ------------------------------------------------------------------------------------


def check_url(url: Any) -> str:
    if not isinstance(url, str) or not url or len(url) > 2000:
        raise Unprocessable("A webhook URL is an http(s) URL.", code="invalid_url", fields={"url": ["Required."]})
    try:
        resolve_public_address(url)
    except (UnsafeUrl, UnresolvableHost) as exc:
        raise type(exc)(exc.message, fields={"url": [exc.message]}) from exc
    return url


def check_event_types(event_types: Any) -> list[str]:
    if event_types is None:
        return []
    if not isinstance(event_types, list) or len(event_types) > MAX_EVENT_TYPES:
        raise Unprocessable(
            f"event_types is a list of at most {MAX_EVENT_TYPES} types or patterns.",
            code="invalid_event_type",
            fields={"event_types": ["A list."]},
        )
    return sorted({types.check_pattern(t, field="event_types") for t in event_types})


def endpoint_create(
    *,
    tenant: Any,
    url: str,
    event_types: list[str] | None = None,
    description: str = "",
    enabled: bool = True,
    secret: str | None = None,
    actor: Actor = SYSTEM,
) -> tuple[WebhookEndpoint, str]:
    """Registers an endpoint; returns it and its secret in clear (shown this once)."""
    clear = signing.secret_check(secret) if secret else signing.secret_generate()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            tenant=tenant,
            url=check_url(url),
            event_types=check_event_types(event_types),
            description=description,
            enabled=enabled,
            secret_encrypted=crypto.encrypt(clear),
        )
        audit_record(
            action="webhook_endpoint.created",
            tenant=tenant,
            actor=actor,
            target=endpoint,
            data={"url": endpoint.url, "event_types": endpoint.event_types},
        )
    return endpoint, clear


def endpoint_update(*, endpoint: WebhookEndpoint, actor: Actor = SYSTEM, **changes: Any) -> WebhookEndpoint:
    with transaction.atomic():
        if "url" in changes:
            endpoint.url = check_url(changes["url"])
        if "event_types" in changes:
            endpoint.event_types = check_event_types(changes["event_types"])
        if "description" in changes:
            endpoint.description = changes["description"]
        if "enabled" in changes and changes["enabled"] != endpoint.enabled:
            endpoint.enabled = bool(changes["enabled"])
            if endpoint.enabled:  # re-enabled by a person: a fresh start
                endpoint.disabled_reason, endpoint.disabled_at, endpoint.failing_since = "", None, None
            else:
                endpoint.disabled_reason, endpoint.disabled_at = "disabled by the tenant", timezone.now()
        endpoint.save()
        audit_record(
            action="webhook_endpoint.updated",
            tenant=endpoint.tenant,
            actor=actor,
            target=endpoint,
            data={k: v for k, v in changes.items() if k in ("url", "event_types", "description", "enabled")},
        )
    return endpoint


def endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor = SYSTEM) -> None:
    with transaction.atomic():
        audit_record(
            action="webhook_endpoint.deleted",
            tenant=endpoint.tenant,
            actor=actor,
            target=endpoint,
            data={"url": endpoint.url},
        )
        endpoint.delete()


def endpoint_rotate_secret(
    *,
    endpoint: WebhookEndpoint,
    overlap: timedelta | None = None,
    secret: str | None = None,
    actor: Actor = SYSTEM,
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the old one keeps signing (alongside) for `overlap`. Returns the new one in clear."""
    clear = signing.secret_check(secret) if secret else signing.secret_generate()
    if overlap is None:
        overlap = timedelta(hours=settings.SIGNALBOX_WEBHOOK_SECRET_OVERLAP_HOURS)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if overlap > timedelta(0):
            endpoint.previous_secret_encrypted = endpoint.secret_encrypted
            endpoint.previous_secret_expires_at = timezone.now() + overlap
        else:
            endpoint.previous_secret_encrypted, endpoint.previous_secret_expires_at = "", None
        endpoint.secret_encrypted = crypto.encrypt(clear)
        endpoint.save()
        audit_record(
            action="webhook_endpoint.secret_rotated",
            tenant=endpoint.tenant,
            actor=actor,
            target=endpoint,
            data={"overlap_seconds": int(overlap.total_seconds())},
        )
    return endpoint, clear


def endpoint_signing_secrets(endpoint: WebhookEndpoint, *, now: datetime | None = None) -> list[str]:
    """The current secret, and the previous one while its overlap window lasts."""
    now = now or timezone.now()
    found = [crypto.decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        found.append(crypto.decrypt(endpoint.previous_secret_encrypted))
    return found


def endpoint_disable(*, endpoint_id: Any, reason: str) -> bool:
    """Disables an enabled endpoint and emits `endpoint.disabled`; False if it already was."""
    now = timezone.now()
    with transaction.atomic():
        changed = WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(
            enabled=False, disabled_reason=reason[:200], disabled_at=now, updated_at=now
        )
        if changed != 1:
            return False
        # Waiting messages will not be sent: they are dead now, replayable once the endpoint is enabled.
        failed = WebhookMessage.objects.filter(endpoint_id=endpoint_id, status=MessageStatus.PENDING).update(
            status=MessageStatus.FAILED, next_attempt_at=None, last_error="The endpoint was disabled.", updated_at=now
        )
        if failed:
            metrics.DEAD_LETTERS.labels(kind="webhook", channel="webhook").inc(failed)
        endpoint = WebhookEndpoint.objects.select_related("tenant").get(pk=endpoint_id)
        audit_record(
            action="webhook_endpoint.disabled",
            tenant=endpoint.tenant,
            actor=Actor(kind="system", id="webhooks"),
            target=endpoint,
            data={"reason": reason},
        )
        event_emit(
            tenant=endpoint.tenant,
            type="endpoint.disabled",
            subject={"type": "webhook_endpoint", "id": str(endpoint.pk)},
            payload={"endpoint_id": str(endpoint.pk), "url": endpoint.url, "reason": reason},
        )
    log.warning("webhook endpoint disabled", extra={"endpoint": str(endpoint_id), "reason": reason})
    return True


# --- fan-out ----------------------------------------------------------------------------------------


def message_body(event: Event) -> str:
    """The JSON a receiver gets: Standard Webhooks' {type, timestamp, data} plus the event id and subject."""
    return json.dumps(
        {
            "id": str(event.pk),
            "type": event.type,
            "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
            "subject": event.subject,
            "data": event.payload,
        },
        separators=(",", ":"),
    )


def _publish_delivery(message_id: Any, *, countdown: float = 0) -> None:
    options: dict[str, Any] = {"queue": "webhooks"}
    if countdown > 0:
        options["countdown"] = countdown
    publish_on_commit("signalbox.webhooks.deliver", str(message_id), **options)


def messages_fan_out(*, event: Event) -> list[Any]:
    """One message per enabled endpoint subscribed to the event's type; deliveries published on commit."""
    now = timezone.now()
    body = message_body(event)
    endpoints = [
        e
        for e in WebhookEndpoint.objects.filter(tenant_id=event.tenant_id, enabled=True)
        if not e.event_types or types.any_matches(e.event_types, event.type)
    ]
    WebhookMessage.objects.bulk_create(
        [
            WebhookMessage(
                tenant_id=event.tenant_id,
                endpoint=e,
                event=event,
                event_type=event.type,
                body=body,
                next_attempt_at=now,
                dispatched_at=now,
            )
            for e in endpoints
        ],
        ignore_conflicts=True,  # a rule's webhook action may have made the message already
    )
    ids = list(
        WebhookMessage.objects.filter(event=event, endpoint__in=endpoints, status=MessageStatus.PENDING).values_list(
            "pk", flat=True
        )
    )
    for pk in ids:  # a message a rule already published is published twice: the claim makes that harmless
        _publish_delivery(pk)
    return ids


def message_for_endpoint(*, event: Event, endpoint_id: Any) -> WebhookMessage:
    """The message of `event` for one endpoint whatever it subscribes to (a rule's webhook action)."""
    endpoint = WebhookEndpoint.objects.filter(tenant_id=event.tenant_id, pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint.", code="endpoint_not_found")
    if not endpoint.enabled:
        raise Conflict("The webhook endpoint is disabled.", code="endpoint_disabled")
    message, created = WebhookMessage.objects.get_or_create(
        endpoint=endpoint,
        event=event,
        defaults={
            "tenant_id": event.tenant_id,
            "event_type": event.type,
            "body": message_body(event),
            "next_attempt_at": timezone.now(),
            "dispatched_at": timezone.now(),
        },
    )
    if created:
        _publish_delivery(message.pk)
    return message


# --- delivery -----------------------------------------------------------------------------------------


def retry_schedule(tenant: Any) -> list[int]:
    """Seconds before each attempt: the tenant's `settings.webhooks.retry_schedule`, else the platform's."""
    custom = ((getattr(tenant, "settings", None) or {}).get("webhooks") or {}).get("retry_schedule")
    if isinstance(custom, list) and custom and all(isinstance(s, int) and s >= 0 for s in custom):
        return custom
    return list(settings.SIGNALBOX_WEBHOOK_RETRY_SCHEDULE)


def request_timeout(tenant: Any) -> float:
    """The platform timeout, or a shorter one the tenant chose (`settings.webhooks.timeout_seconds`)."""
    limit = float(settings.SIGNALBOX_WEBHOOK_TIMEOUT_SECONDS)
    custom = ((getattr(tenant, "settings", None) or {}).get("webhooks") or {}).get("timeout_seconds")
    if isinstance(custom, (int, float)) and 0 < custom < limit:
        return float(custom)
    return limit


def message_claim(*, message_id: Any) -> bool:
    now = timezone.now()
    claimed = WebhookMessage.objects.filter(
        pk=message_id, status=MessageStatus.PENDING, next_attempt_at__lte=now + CLAIM_TOLERANCE
    ).update(status=MessageStatus.SENDING, claimed_at=now, attempt_count=F("attempt_count") + 1, updated_at=now)
    return claimed == 1


def _excerpt(content: bytes) -> str:
    return content[:RESPONSE_EXCERPT_CHARS].decode("utf-8", errors="replace")


def _send(message: WebhookMessage) -> tuple[str, int | None, str, str]:
    """One HTTP attempt: (outcome, status code, response excerpt, error)."""
    endpoint = message.endpoint
    try:
        headers = signing.signed_headers(
            secrets=endpoint_signing_secrets(endpoint), msg_id=message.webhook_id, body=message.body
        )
        response, content = safe_post(
            endpoint.url, body=message.body.encode(), headers=headers, timeout=request_timeout(message.tenant)
        )
    except UnsafeUrl as exc:
        return AttemptOutcome.REFUSED, None, "", exc.message
    except UnresolvableHost as exc:
        return AttemptOutcome.NETWORK, None, "", exc.message
    except requests.Timeout:
        return AttemptOutcome.TIMEOUT, None, "", f"No answer within {request_timeout(message.tenant):g} s."
    except requests.RequestException as exc:
        return AttemptOutcome.NETWORK, None, "", f"{type(exc).__name__}: {str(exc)[:300]}"
    except crypto.DecryptionFailed as exc:
        return AttemptOutcome.REFUSED, None, "", str(exc)
    status = response.status_code
    if 200 <= status < 300:
        return AttemptOutcome.SUCCESS, status, _excerpt(content), ""
    if status == 410:
        return AttemptOutcome.GONE, status, _excerpt(content), "The endpoint answered 410 Gone."
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    return AttemptOutcome.FAILED, status, _excerpt(content), f"HTTP {status}{note}."


def _finish(message: WebhookMessage, *, outcome: str, status: int | None, excerpt: str, error: str, ms: int) -> None:
    now = timezone.now()
    endpoint = message.endpoint
    schedule = retry_schedule(message.tenant)
    countdown: float | None = None
    with transaction.atomic():
        WebhookAttempt.objects.create(
            tenant_id=message.tenant_id,
            message=message,
            number=message.attempt_count,
            outcome=outcome,
            status_code=status,
            response_body=excerpt,
            error=error,
            duration_ms=ms,
        )
        changes: dict[str, Any] = {"last_status_code": status, "last_error": error, "claimed_at": None}
        if outcome == AttemptOutcome.SUCCESS:
            changes.update(status=MessageStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
        elif outcome in (AttemptOutcome.GONE, AttemptOutcome.REFUSED):
            changes.update(status=MessageStatus.FAILED, next_attempt_at=None)
        elif message.schedule_step + 1 < len(schedule):
            wait = schedule[message.schedule_step + 1]
            changes.update(
                status=MessageStatus.PENDING,
                schedule_step=message.schedule_step + 1,
                next_attempt_at=now + timedelta(seconds=wait),
            )
            if wait <= settings.SIGNALBOX_WEBHOOK_COUNTDOWN_MAX_SECONDS:
                countdown = wait
            changes["dispatched_at"] = now if countdown is not None else None  # None: the dispatcher's job
        else:
            changes.update(status=MessageStatus.FAILED, next_attempt_at=None)
        # claimed_at is this attempt's claim token: a claim the dispatcher took back is not ours to finish.
        updated = WebhookMessage.objects.filter(
            pk=message.pk, status=MessageStatus.SENDING, claimed_at=message.claimed_at
        ).update(updated_at=now, **changes)
        if updated and changes["status"] == MessageStatus.FAILED:
            metrics.DEAD_LETTERS.labels(kind="webhook", channel="webhook").inc()
        if updated and countdown is not None:
            _publish_delivery(message.pk, countdown=countdown)
        if outcome == AttemptOutcome.SUCCESS:
            WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=False).update(failing_since=None)
        else:
            WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
        # In the same transaction as the attempt: whoever sees the message failed sees the endpoint disabled.
        if outcome == AttemptOutcome.GONE:
            endpoint_disable(endpoint_id=endpoint.pk, reason="The endpoint answered 410 Gone.")
        elif outcome != AttemptOutcome.SUCCESS:
            failing_since = (
                WebhookEndpoint.objects.filter(pk=endpoint.pk).values_list("failing_since", flat=True).first()
            )
            limit = timedelta(days=settings.SIGNALBOX_WEBHOOK_DISABLE_AFTER_DAYS)
            if failing_since is not None and now - failing_since >= limit:
                days = f"{settings.SIGNALBOX_WEBHOOK_DISABLE_AFTER_DAYS:g}"
                endpoint_disable(endpoint_id=endpoint.pk, reason=f"Every attempt failed for {days} days.")
    metrics.WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()


def message_deliver(*, message_id: Any) -> str | None:
    """Claims and sends one message; returns the attempt's outcome, or None if not claimed."""
    if not message_claim(message_id=message_id):
        return None
    message = WebhookMessage.objects.select_related("endpoint", "tenant").get(pk=message_id)
    if not message.endpoint.enabled:
        now = timezone.now()
        failed = WebhookMessage.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
            status=MessageStatus.FAILED,
            attempt_count=F("attempt_count") - 1,  # nothing was sent
            next_attempt_at=None,
            claimed_at=None,
            last_error="The endpoint is disabled.",
            updated_at=now,
        )
        if failed:
            metrics.DEAD_LETTERS.labels(kind="webhook", channel="webhook").inc()
        return None
    started = time.monotonic()
    outcome, status, excerpt, error = _send(message)
    _finish(
        message,
        outcome=outcome,
        status=status,
        excerpt=excerpt,
        error=error,
        ms=int((time.monotonic() - started) * 1000),
    )
    return outcome


def webhooks_dispatch_due(*, limit: int = 1000) -> int:
    """Publishes due messages and reclaims ones whose worker died mid-send; returns how many were published."""
    now = timezone.now()
    # A send lasts at most the timeout; a claim much older than that belongs to a dead worker.
    stale = now - timedelta(seconds=float(settings.SIGNALBOX_WEBHOOK_TIMEOUT_SECONDS) + 120)
    reclaimed = WebhookMessage.objects.filter(status=MessageStatus.SENDING, claimed_at__lt=stale).update(
        status=MessageStatus.PENDING, next_attempt_at=now, claimed_at=None, dispatched_at=None, updated_at=now
    )
    if reclaimed:
        metrics.SWEEPER_RECOVERED.labels(kind="webhook_message").inc(reclaimed)
    # A message published a moment ago may just be waiting in a busy queue: publish it again only
    # once its task is surely lost, or every tick would add a duplicate to the backlog.
    redispatch = now - timedelta(seconds=settings.SIGNALBOX_WEBHOOK_COUNTDOWN_MAX_SECONDS + 30)
    with transaction.atomic():
        ids = list(
            WebhookMessage.objects.select_for_update(skip_locked=True)
            .filter(status=MessageStatus.PENDING, next_attempt_at__lte=now)
            .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=redispatch))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        WebhookMessage.objects.filter(pk__in=ids).update(dispatched_at=now)
    for pk in ids:
        publish("signalbox.webhooks.deliver", str(pk), queue="webhooks")
    return len(ids)


# --- replay ---------------------------------------------------------------------------------------------


def message_replay(*, message: WebhookMessage, actor: Actor = SYSTEM) -> WebhookMessage:
    """Sends a finished (dead or delivered) message again: same webhook-id, the schedule restarted."""
    if message.status in (MessageStatus.PENDING, MessageStatus.SENDING):
        raise Conflict("The message is still being delivered.", code="message_in_flight")
    if not message.endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first.", code="endpoint_disabled")
    with transaction.atomic():
        now = timezone.now()
        updated = WebhookMessage.objects.filter(pk=message.pk, status=message.status).update(
            status=MessageStatus.PENDING, schedule_step=0, next_attempt_at=now, dispatched_at=now, updated_at=now
        )
        if updated != 1:
            raise Conflict("The message changed meanwhile; reload it.", code="conflict")
        audit_record(
            action="webhook_message.replayed",
            tenant=message.tenant,
            actor=actor,
            target=message,
            data={"endpoint_id": str(message.endpoint_id), "event_type": message.event_type, "was": message.status},
        )
        _publish_delivery(message.pk)
    message.refresh_from_db()
    return message


def messages_replay(
    *,
    tenant: Any,
    endpoint_id: Any = None,
    since: datetime | None = None,
    ids: list[uuid.UUID] | None = None,
    limit: int = MAX_BULK_REPLAY,
    actor: Actor = SYSTEM,
) -> list[Any]:
    """Replays the tenant's dead messages (optionally of one endpoint, since a time, or given ids).

    One audit entry lists what was replayed (at most MAX_BULK_REPLAY ids); none when nothing was.
    """
    now = timezone.now()
    query = Q(tenant=tenant, status=MessageStatus.FAILED, endpoint__enabled=True)
    if endpoint_id is not None:
        query &= Q(endpoint_id=endpoint_id)
    if since is not None:
        query &= Q(created_at__gte=since)
    if ids is not None:
        query &= Q(pk__in=ids)
    with transaction.atomic():
        chosen = list(
            WebhookMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(query)
            .order_by("created_at")
            .values_list("pk", flat=True)[: min(limit, MAX_BULK_REPLAY)]
        )
        WebhookMessage.objects.filter(pk__in=chosen, status=MessageStatus.FAILED).update(
            status=MessageStatus.PENDING, schedule_step=0, next_attempt_at=now, dispatched_at=now, updated_at=now
        )
        if chosen:
            audit_record(
                action="webhook_message.bulk_replayed",
                tenant=tenant,
                actor=actor,
                target_type=WebhookMessage._meta.label_lower,
                data={
                    "count": len(chosen),
                    "ids": [str(pk) for pk in chosen],
                    "endpoint_id": str(endpoint_id) if endpoint_id is not None else None,
                    "since": since.isoformat() if since is not None else None,
                },
            )
        for pk in chosen:
            _publish_delivery(pk)
    return chosen
