"""Sending deliveries: claim, load, render, send, record — one named step each.

A send task carries a batch of delivery ids. For each batch:

1. **claim** (`batch_claim`, `deliveries_claim`) — one conditional UPDATE moves the rows from
   `queued` to `sending` with a lease and a claim token; a row another worker claimed, or one that was
   cancelled, is skipped, so no two workers ever send the same delivery;
2. **load** (`batch_load`) the recipients, notifications, device tokens and suppression-list
   entries at once;
3. **render** (`batch_render`: `delivery_unsendable`, `delivery_message`, `delivery_provider`)
   and build each `Message` (the address is resolved here, at send time) and choose
   its provider: the chain's turn for the attempt, skipping providers whose circuit breaker is
   open (`apps/providers/circuit.py`), but the provider an earlier request may still have
   reached when there is one (`in_flight_provider`). Anything that goes wrong for one recipient
   (a template error, a MemoryError) fails that delivery alone, with the reason;
4. **send** (`batch_send`: `batch_admit`, `request_begin`, `request_call`), one provider request
   at a time: an adapter's `plan_requests` says which messages share a request (SendGrid: one
   content, up to 1000 personalizations), anything else is sent one message per request.
   Before each request the rows are marked in flight to that provider (`in_flight_provider`)
   by an UPDATE that also renews their lease and returns the rows this claim still holds: only
   those are sent. The time budget is checked between requests; what is
   left when it is used up goes back to the queue. Send limits (`ratelimits.py`), an address put
   on the suppression list since fan-out, or a chain whose every provider is failing hold or
   suppress a delivery instead (see docs/reliability.md);
5. **record** (`request_record`; `batch_settle` for what needed no request) each request's
   outcomes as soon as it answers, in one short transaction guarded by the claim token (a sender
   whose rows the sweeper took back records nothing): accepted ->
   `sent` (or `delivered`); transient -> `pending` with `next_attempt_at` (exponential backoff
   with full jitter, per tenant and channel, never sooner than the provider's retry_after; the
   dispatcher re-queues it), or `dead` after the last attempt; ambiguous (a timeout after the
   request was written) -> `unknown` for a provider whose callbacks can settle it, retried with
   the same provider after `RECONCILE_WINDOW_SECONDS` if none does; permanent -> `failed`, no
   retry (and the address on the suppression list when the error condemns it). A lost database
   connection is survived: the record is written again on a new one, never twice. The same
   transaction emits the outcomes' platform events (`announce.py`).

So a worker killed at any instant leaves at most one request's messages unrecorded, and those
rows say so (`in_flight_provider`): the sweeper turns them into `unknown`, not blind retries.

An adapter with a `session()` (SMTP: one connection) keeps it open around the batch's
requests (`provider_session`). Each provider call is one log line ("provider answered") with
the notification and delivery ids.

Retries are rows in PostgreSQL, never long Celery countdowns. A worker that dies mid-send
leaves rows in `sending`; the sweeper takes them back when the lease runs out.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.core.db import reconnecting
from apps.core.publish import publish_on_commit
from apps.core.retry import RetryPolicy
from apps.notifications import channels as registry
from apps.notifications import conf, hooks
from apps.notifications.models import Delivery, Device, Notification, Recipient
from apps.notifications.rendering import RenderError
from apps.notifications.services import ratelimits, suppressions
from apps.notifications.services.announce import Audience, deliveries_announce
from apps.notifications.services.bulk import JsonText, attempts_insert, deliveries_record, uuid_array
from apps.notifications.services.content import NotificationRenderer, email_options, message_metadata
from apps.notifications.services.inbox import inbox_delivered
from apps.notifications.services.notifications import notification_complete_if_settled
from apps.notifications.services.recipients import devices_deactivate_tokens, recipient_webhook_secret
from apps.observability import metrics
from apps.observability.audit import audit_record
from apps.providers import circuit
from apps.providers.base import Channel, Message, Outcome, Provider, SendResult, provider_session
from apps.providers.registry import ADAPTERS
from apps.tenancy.models import Tenant

log = logging.getLogger(__name__)

Status = Delivery.Status


def retry_policy_for(tenant_settings: Mapping[str, Any] | None, channel: str | None = None) -> RetryPolicy:
    """Settings, optionally overridden per tenant in `Tenant.settings["retry_policy"]`, and per
    channel in `Tenant.settings["retry"][channel]` (same keys: max_attempts, base_seconds, cap_seconds)."""
    defaults = conf.get()
    override = dict((tenant_settings or {}).get("retry_policy") or {})
    if channel:
        override.update(((tenant_settings or {}).get("retry") or {}).get(channel) or {})
    return RetryPolicy(
        max_attempts=max(1, int(override.get("max_attempts", defaults.MAX_ATTEMPTS))),
        base_seconds=float(override.get("base_seconds", defaults.RETRY_BASE_SECONDS)),
        cap_seconds=float(override.get("cap_seconds", defaults.RETRY_CAP_SECONDS)),
    )


def backoff_seconds(
    *, attempt: int, policy: RetryPolicy, retry_after: float | None = None, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter (uniform in [0, min(cap, base * 2^(attempt-1))]);
    a provider's retry_after is a floor, never shortened by the jitter."""
    return policy.delay(attempt, retry_after=retry_after, rng=rng)


def reconciles(provider: str) -> bool:
    """Whether this provider's callbacks report each message by its delivery id, so a send whose
    answer was lost can wait for them instead of being retried blind."""
    return registry.adapter_flag(ADAPTERS.get(provider), "reconciles", False)


def outcome_fields(
    *,
    adapter: Any,
    result: SendResult,
    attempt: int,
    policy: RetryPolicy,
    now: datetime,
    reconcile_seconds: float | None = None,
) -> dict[str, Any]:
    """The delivery columns a send result leads to (the same rule for fan-out's inline sends).

    With `reconcile_seconds` (the adapter's callbacks can settle it), an ambiguous result waits
    that long as `unknown` for the provider's report, on the last attempt too."""
    if result.accepted:
        delivered = registry.adapter_flag(adapter, "confirms_delivery", False)
        return {
            "status": Status.DELIVERED if delivered else Status.SENT,
            "provider_message_id": result.message_id[:255],
            "sent_at": now,
            "delivered_at": now if delivered else None,
            "next_attempt_at": None,
            "error_code": "",
            "last_error": "",
        }
    error = {"error_code": (result.code or result.outcome.value)[:64], "last_error": result.detail[:2000]}
    if result.outcome is Outcome.TRANSIENT and result.ambiguous and reconcile_seconds is not None:
        return {"status": Status.UNKNOWN, "next_attempt_at": now + timedelta(seconds=reconcile_seconds), **error}
    if result.outcome is Outcome.TRANSIENT and attempt < policy.max_attempts:
        delay = backoff_seconds(attempt=attempt, policy=policy, retry_after=result.retry_after)
        return {"status": Status.PENDING, "next_attempt_at": now + timedelta(seconds=delay), **error}
    if result.outcome is Outcome.TRANSIENT:
        return {"status": Status.DEAD, "next_attempt_at": None, "failed_at": now, **error}
    return {"status": Status.FAILED, "next_attempt_at": None, "failed_at": now, **error}


# --- Claim and lease -----------------------------------------------------------------------------


class Claimed(NamedTuple):
    # The delivery id as text: the send path keys sets and dicts by it and writes it into
    # statements, and a UUID object costs a `str()` (and slower hashing) each time, ~20 a delivery.
    id: str
    tenant_id: Any
    notification_id: str  # text too, as the keys of `SendBatch.notifications`
    recipient_id: int
    channel: str
    attempts: int
    # The provider an earlier request of this delivery may have reached (its answer was lost).
    in_flight_provider: str = ""


_CLAIM_SQL = (
    "UPDATE {table} SET status = 'sending', lease_expires_at = %s, attempts = attempts + 1, claim_token = %s "
    "WHERE id = ANY(%s::uuid[]) AND status = 'queued'{prune} "
    "RETURNING id::text, tenant_id, notification_id::text, recipient_id, channel, attempts, in_flight_provider"
)
# Deliveries are partitioned by notification id (docs/partitions.md): a statement that names the
# rows' notifications as well as their ids probes only those notifications' months, not one index
# per monthly partition.
_PRUNE_SQL = " AND notification_id = ANY(%s::uuid[])"


def _prune(notification_ids: Iterable[Any] | None) -> tuple[str, list[Any]]:
    """The partition-pruning condition and its parameter, or nothing when the notifications are
    unknown (a send message from before they were carried: every partition is probed)."""
    if notification_ids is None:
        return "", []
    return _PRUNE_SQL, [uuid_array(sorted({str(pk) for pk in notification_ids}))]


_CLAIMED_FIELDS = ("id", "tenant_id", "notification_id", "recipient_id", "channel", "attempts", "in_flight_provider")


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=conf.get().SEND_LEASE_SECONDS)


def deliveries_claim(
    *,
    delivery_ids: Sequence[Any],
    now: datetime | None = None,
    token: uuid.UUID | None = None,
    notification_ids: Sequence[Any] | None = None,
) -> list[Claimed]:
    """Moves `queued` rows to `sending` with a lease, the claim's token and one more attempt, in
    one conditional UPDATE; returns the rows won. `notification_ids` (those of the rows, as the
    send message carries them) lets PostgreSQL look in their partitions only; a row whose
    notification is not among them is not claimed.

    The `status = 'queued'` condition is re-checked on each row after any concurrent claimer's
    lock is released, so of two workers given the same id exactly one gets it. Every later write
    of the sender is guarded by the token, so once the sweeper has taken a row back (and another
    worker perhaps claimed it again) the first sender can no longer touch it.
    """
    if not delivery_ids:
        return []
    token = token or uuid.uuid4()
    lease_until = _lease_until(now or timezone.now())
    if connection.vendor == "postgresql":
        prune, prune_params = _prune(notification_ids)
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_SQL.format(table=Delivery._meta.db_table, prune=prune),
                [lease_until, token, uuid_array(delivery_ids), *prune_params],
            )
            return [Claimed(*row) for row in cursor.fetchall()]
    with transaction.atomic():
        candidates = Delivery.objects.select_for_update().filter(pk__in=delivery_ids, status=Status.QUEUED)
        if notification_ids is not None:
            candidates = candidates.filter(notification_id__in=notification_ids)
        won = list(candidates.values_list("pk", flat=True))
        Delivery.objects.filter(pk__in=won, status=Status.QUEUED).update(
            status=Status.SENDING, lease_expires_at=lease_until, attempts=F("attempts") + 1, claim_token=token
        )
        return [
            Claimed(str(row[0]), row[1], str(row[2]), *row[3:])
            for row in Delivery.objects.filter(pk__in=won).values_list(*_CLAIMED_FIELDS)
        ]


def delivery_claim(*, delivery_ids: Sequence[Any], now: datetime | None = None) -> list[Any]:
    """The ids `deliveries_claim` won."""
    return [row.id for row in deliveries_claim(delivery_ids=delivery_ids, now=now)]


def deliveries_keep_lease(
    *,
    token: uuid.UUID,
    delivery_ids: Iterable[Any],
    provider: str = "",
    now: datetime | None = None,
    notification_ids: Iterable[Any] | None = None,
) -> set[str]:
    """Renews the lease of the rows this claim still holds and returns their ids; with a
    `provider`, also marks them in flight to it, which a request to it must be preceded by.

    A row the sweeper took back is no longer `sending` with this token: it is not returned, and
    the sender must not send it. The sweeper locks the rows it takes back, so of the two exactly
    one wins each row."""
    ids = [str(pk) for pk in delivery_ids]
    if not ids:
        return set()
    values: dict[str, Any] = {"lease_expires_at": _lease_until(now or timezone.now())}
    if provider:
        values.update(in_flight_provider=provider, provider=provider)
    if connection.vendor == "postgresql":
        sets = ", ".join(f"{name} = %s" for name in values)
        prune, prune_params = _prune(notification_ids)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Delivery._meta.db_table} SET {sets} "  # noqa: S608 (names are ours)
                f"WHERE id = ANY(%s::uuid[]) AND status = 'sending' AND claim_token = %s{prune} RETURNING id",
                [*values.values(), uuid_array(ids), token, *prune_params],
            )
            return {str(row[0]) for row in cursor.fetchall()}
    with transaction.atomic():
        held = Delivery.objects.select_for_update().filter(pk__in=ids, status=Status.SENDING, claim_token=token)
        kept = {str(pk) for pk in held.values_list("pk", flat=True)}
        Delivery.objects.filter(pk__in=kept).update(**values)
    return kept


def _release(ids: Sequence[Any], now: datetime, token: uuid.UUID, notification_ids: Iterable[Any]) -> int:
    """Gives claimed but unsent rows back to the queue (the attempt did not happen)."""
    mine = Delivery.objects.filter(
        pk__in=ids, notification_id__in=list(notification_ids), status=Status.SENDING, claim_token=token
    )
    return mine.update(
        status=Status.QUEUED, lease_expires_at=None, attempts=F("attempts") - 1, queued_at=now, claim_token=None
    )


def _end_claim(
    token: uuid.UUID, ids: Iterable[str], settled: Iterable[str], notification_ids: Iterable[Any] | None = None
) -> set[str]:
    """Inside the record's transaction: ends this claim on `ids` and returns those it still held
    (locked until the commit); `settled` got a definite answer, so no request is in flight for
    them any more. Rows another worker holds now, or the sweeper took back, are not returned."""
    ids, settled = list(ids), list(settled)
    if not ids:
        return set()
    if connection.vendor == "postgresql":
        prune, prune_params = _prune(notification_ids)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Delivery._meta.db_table} SET claim_token = NULL, "  # noqa: S608 (names are ours)
                "in_flight_provider = CASE WHEN id = ANY(%s::uuid[]) THEN '' ELSE in_flight_provider END "
                f"WHERE id = ANY(%s::uuid[]) AND claim_token = %s{prune} RETURNING id",
                [uuid_array(settled), uuid_array(ids), token, *prune_params],
            )
            return {str(row[0]) for row in cursor.fetchall()}
    mine = Delivery.objects.select_for_update().filter(pk__in=ids, claim_token=token)
    owned = {str(pk) for pk in mine.values_list("pk", flat=True)}
    Delivery.objects.filter(pk__in=owned & set(settled)).update(in_flight_provider="")
    Delivery.objects.filter(pk__in=owned).update(claim_token=None)
    return owned


# --- Sending -------------------------------------------------------------------------------------

RECIPIENT_FIELDS = (
    "id",
    "external_id",
    "name",
    "email",
    "phone",
    "locale",
    "timezone",
    "chat_address",
    "webhook_url",
    "data",
    "webhook_secret_encrypted",
)


@dataclass
class SendSummary:
    claimed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    released: list[str] = field(default_factory=list)


@dataclass
class SendItem:
    delivery: Claimed
    message: Message
    rendered: dict[str, Any]


def request_call(adapter: Provider, messages: Sequence[Message]) -> tuple[list[SendResult], float]:
    """One provider request: results in order and the milliseconds per message; an adapter that
    raises is a transient failure."""
    started = time.perf_counter()
    try:
        batch = getattr(adapter, "send_batch", None)
        results = (
            list(batch(messages)) if callable(batch) and len(messages) > 1 else [adapter.send(m) for m in messages]
        )
        if len(results) != len(messages):
            raise RuntimeError(f"{adapter.name} returned {len(results)} results for {len(messages)} messages")
    except Exception as exc:
        log.exception("channel adapter raised", extra={"provider": adapter.name})
        detail = f"{type(exc).__name__}: {exc}"
        results = [SendResult.transient(adapter.name, detail, code="adapter_error") for _ in messages]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return results, elapsed_ms / max(len(messages), 1)


def _request_groups(adapter: Provider, items: list[SendItem]) -> list[list[SendItem]]:
    """The batch split into provider requests, each recorded before the next is made, so a worker
    killed mid-batch leaves at most one request unrecorded. An adapter's `plan_requests` says
    which messages share one (SendGrid: one content, up to 1000 personalizations); the built-in
    inbox and sinks make no remote request, so their batch is one call; anything else is sent one
    message per request (SMTP: one per SMTP transaction, sharing a connection through its
    `session()`, apps/providers/base.py)."""
    plan = getattr(adapter, "plan_requests", None)
    if callable(plan) and items:
        groups = [list(group) for group in plan([item.message for item in items])]
        if sorted(i for group in groups for i in group) == list(range(len(items))) and all(groups):
            return [[items[i] for i in group] for group in groups]
        log.error("an adapter's request plan does not cover its batch once", extra={"provider": adapter.name})
    elif adapter.name in registry.BUILTIN_ADAPTERS and callable(getattr(adapter, "send_batch", None)) and items:
        return [items]
    return [[item] for item in items]


def _device_tokens(claimed: Iterable[Claimed]) -> dict[int, list[str]]:
    recipient_ids = {d.recipient_id for d in claimed if d.channel == Channel.PUSH}
    tokens: dict[int, list[str]] = defaultdict(list)
    if recipient_ids:
        for recipient_id, token in Device.objects.filter(recipient__any=list(recipient_ids), active=True).values_list(
            "recipient_id", "token"
        ):
            tokens[recipient_id].append(token)
    return tokens


class _Tally:
    """Metrics for a batch, incremented once per label set instead of once per delivery."""

    def __init__(self) -> None:
        self.attempts: Counter[tuple[str, str, str]] = Counter()
        self.finals: Counter[tuple[str, str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.suppressed: Counter[tuple[str, str]] = Counter()
        self.latencies: dict[str, list[float]] = defaultdict(list)

    def add(self, *, channel: str, provider: str, result: SendResult, status: str, latency: float) -> None:
        self.attempts[(channel, provider, result.outcome.value)] += 1
        if status in (Status.PENDING, Status.UNKNOWN):
            self.retries[channel] += 1
            return
        self.finals[(channel, provider, status)] += 1
        if status == Status.DEAD:
            self.dead[channel] += 1
        if result.accepted:
            self.latencies[channel].append(latency)

    def flush(self) -> None:
        for (channel, provider, outcome), n in self.attempts.items():
            metrics.DELIVERY_ATTEMPTS.labels(channel=channel, provider=provider, outcome=outcome).inc(n)
        for (channel, provider, status), n in self.finals.items():
            metrics.DELIVERIES.labels(channel=channel, provider=provider, status=status).inc(n)
        for channel, n in self.retries.items():
            metrics.DELIVERY_RETRIES.labels(channel=channel).inc(n)
        for channel, n in self.dead.items():
            metrics.DEAD_LETTERS.labels(kind="delivery", channel=channel).inc(n)
        for (channel, reason), n in self.suppressed.items():
            metrics.SUPPRESSED.labels(channel=channel, reason=reason).inc(n)
        for channel, values in self.latencies.items():
            histogram = metrics.DELIVERY_LATENCY.labels(channel=channel)
            for value in values:
                histogram.observe(value)


def _log_answer(adapter: Provider, group: Sequence[SendItem], results: Sequence[SendResult], latency_ms: float) -> None:
    """One line per provider call, with the ids that follow a notification from its request (the
    request id and tenant are in the context) to the provider's answer; no addresses or content."""
    notification_ids = sorted({str(item.delivery.notification_id) for item in group})
    log.info(
        "provider answered",
        extra={
            "provider": adapter.name,
            "channel": group[0].delivery.channel,
            "notification_id": notification_ids[0] if len(notification_ids) == 1 else notification_ids,
            "delivery_id": str(group[0].delivery.id) if len(group) == 1 else None,
            "messages": len(group),
            "outcomes": dict(Counter(r.outcome.value for r in results)),
            "codes": sorted({r.code for r in results if r.code}) or None,
            "ambiguous": sum(1 for r in results if r.ambiguous) or None,
            "latency_ms": round(latency_ms, 1),
        },
    )


def _listed(
    claimed: Sequence[Claimed], notifications: Mapping[Any, Notification], recipients: Mapping[int, Any]
) -> set[Any]:
    """Claimed deliveries whose address went on the suppression list after fan-out."""
    by_scope: dict[tuple[Any, str], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for delivery in claimed:
        if delivery.channel in suppressions.SUPPRESSIBLE_CHANNELS:
            address = suppressions.normalize(
                delivery.channel, registry.address_for(delivery.channel, recipients[delivery.recipient_id])
            )
            if address:
                by_scope[(delivery.tenant_id, delivery.channel)][address].append(delivery.id)
    listed: set[Any] = set()
    for (tenant_id, channel), addresses in by_scope.items():
        for address in suppressions.suppressed(tenant_id=tenant_id, channel=channel, addresses=addresses):
            listed.update(addresses[address])
    return listed


@dataclass
class SendBatch:
    """One send task's claimed rows and what it loaded for them, shared by the steps."""

    token: uuid.UUID
    claimed: list[Claimed]
    started: float
    budget: float
    lease_seconds: float
    renewed: float
    # Claimed rows neither recorded nor released yet, and still held by this claim.
    open_ids: set[str]
    summary: SendSummary
    tally: _Tally = field(default_factory=_Tally)
    audience: Audience = field(default_factory=Audience)  # who listens to delivery events, asked once per tenant
    recipients: dict[int, Any] = field(default_factory=dict)
    notifications: dict[Any, Notification] = field(default_factory=dict)
    device_tokens: dict[int, list[str]] = field(default_factory=dict)
    listed: set[Any] = field(default_factory=set)
    policies: dict[tuple[Any, str], RetryPolicy] = field(default_factory=dict)
    tenant_of: dict[Any, Any] = field(default_factory=dict)  # delivery id -> tenant id
    notification_ids: list[str] = field(default_factory=list)  # the claimed rows' (partition pruning)
    # Content dicts the renderers share between recipients, encoded once: id -> (the dict, its JSON).
    content_json: dict[int, tuple[Any, str]] = field(default_factory=dict)

    def rendered_json(self, rendered: Mapping[str, Any]) -> JsonText:
        """The `rendered` column's JSON; content shared by many recipients (one object, from the
        renderer) is encoded once per batch, not once per delivery."""
        content = rendered.get("content")
        if set(rendered) != {"to", "locale", "content"} or not isinstance(content, dict):
            return JsonText(json.dumps(rendered))
        cached = self.content_json.get(id(content))
        if cached is None or cached[0] is not content:
            cached = self.content_json[id(content)] = (content, json.dumps(content))
        to, locale = json.dumps(rendered["to"]), json.dumps(rendered["locale"])
        return JsonText(f'{{"to": {to}, "locale": {locale}, "content": {cached[1]}}}')

    def policy(self, notification: Notification, channel: str) -> RetryPolicy:
        key = (id(notification), channel)  # the batch holds its notifications: a cheap, stable key
        if key not in self.policies:
            self.policies[key] = retry_policy_for(notification.tenant.settings, channel)
        return self.policies[key]

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.budget


@dataclass
class SendPlan:
    """What rendering decided: rows settled without a request, holds, and the requests to make."""

    settled: list[dict[str, Any]] = field(default_factory=list)
    held: list[ratelimits.Held] = field(default_factory=list)
    # Keyed by adapter instance: two tenants' adapters may share a name but not credentials.
    work: dict[int, tuple[Provider, list[SendItem]]] = field(default_factory=dict)


def _flush(
    batch: SendBatch,
    *,
    rows: Sequence[dict[str, Any]] = (),
    attempts: Sequence[dict[str, Any]] = (),
    held: Sequence[ratelimits.Held] = (),
    listed: Sequence[dict[str, Any]] = (),
    remote: bool = False,
    settled: Iterable[str] = (),
) -> set[str]:
    """Writes outcomes of claimed rows in one transaction, with their platform events
    (`announce.py`), for the rows this claim still holds; returns their ids. `remote`: the
    outcomes of a request to a provider, of which `settled` got a definite answer.

    The claim ends in the same transaction, so when the connection is lost and the write runs
    again on a new one, a commit that succeeded just before finds nothing left to write: nothing
    is recorded twice, and nothing the provider answered is forgotten."""
    ids = {str(r["id"]) for r in rows} | {str(a["delivery_id"]) for a in attempts} | {str(h.id) for h in held}
    if not ids:
        return set()
    settled = list(settled)
    tenant_of = batch.tenant_of

    def write() -> set[str]:
        with transaction.atomic():
            if remote or held:
                # Ends the claim first (locking the rows): a remote request's settled rows are no
                # longer in flight, and rows a provider's callback settled before this record are
                # still ours to log the attempt of; holds are written by status alone.
                owned = _end_claim(batch.token, ids, settled, batch.notification_ids)
                written = {
                    str(pk)
                    for pk in deliveries_record(
                        [r for r in rows if str(r["id"]) in owned], notification_ids=batch.notification_ids
                    )
                }
            else:
                written = {
                    str(pk)
                    for pk in deliveries_record(rows, claim_token=batch.token, notification_ids=batch.notification_ids)
                }
                owned = written
            deliveries_announce(
                ((tenant_of[r["id"]], r["id"], r["status"]) for r in rows if str(r["id"]) in written), batch.audience
            )
            hooks.delivery_outcomes((r["id"], r["status"]) for r in rows if str(r["id"]) in written)
            inbox_delivered(
                (c.id, c.recipient_id) for c in batch.claimed if c.channel == "in_app" and str(c.id) in written
            )
            attempts_insert([a for a in attempts if str(a["delivery_id"]) in owned], now=timezone.now())
            ratelimits.deliveries_hold([h for h in held if str(h.id) in owned])
            suppressions.suppressions_add([entry for entry in listed if str(entry["delivery_id"]) in owned])
            return owned

    owned = reconnecting(write)
    batch.open_ids -= ids
    if ids - owned:
        log.warning("rows taken back from this sender were not recorded", extra={"deliveries": len(ids - owned)})
    return owned


# --- The steps: claim → load → render → send → record ----------------------------------------------


def batch_claim(delivery_ids: Sequence[Any], notification_ids: Sequence[Any] | None = None) -> SendBatch:
    """Claims the rows (`deliveries_claim`) under a new token and starts the batch's clocks;
    every later statement on them names their notifications, so PostgreSQL prunes partitions."""
    token = uuid.uuid4()
    claimed = reconnecting(
        lambda: deliveries_claim(delivery_ids=delivery_ids, token=token, notification_ids=notification_ids)
    )
    settings = conf.get()
    return SendBatch(
        token=token,
        claimed=claimed,
        started=time.monotonic(),
        budget=settings.SEND_TIME_BUDGET_SECONDS,
        lease_seconds=settings.SEND_LEASE_SECONDS,
        renewed=time.monotonic(),
        open_ids={str(d.id) for d in claimed},
        summary=SendSummary(claimed=len(claimed)),
        tenant_of={d.id: d.tenant_id for d in claimed},
        notification_ids=sorted({str(d.notification_id) for d in claimed}),
    )


def batch_load(batch: SendBatch) -> None:
    """Loads what the claimed rows need at once: recipients, notifications, device tokens, and
    which addresses went on the suppression list since fan-out."""
    claimed = batch.claimed

    def load() -> None:
        batch.recipients = {
            r.id: r
            for r in Recipient.objects.filter(id__any=list({d.recipient_id for d in claimed})).values_list(
                *RECIPIENT_FIELDS, named=True
            )
        }
        batch.notifications = {
            str(n.pk): n
            for n in Notification.objects.filter(pk__in={d.notification_id for d in claimed}).select_related(
                "tenant", "category", "template", "template_version"
            )
        }
        batch.device_tokens = _device_tokens(claimed)
        batch.listed = _listed(claimed, batch.notifications, batch.recipients)

    reconnecting(load)


class RenderContext:
    """What rendering resolves once per batch: each notification's renderer and email options,
    and each tenant's provider chain and open circuits per channel."""

    def __init__(self, batch: SendBatch) -> None:
        self.now = timezone.now()
        self.renderers = {
            pk: NotificationRenderer(n, default_locale=str((n.tenant.settings or {}).get("default_locale", "")))
            for pk, n in batch.notifications.items()
        }
        self.emails = {pk: email_options(n) for pk, n in batch.notifications.items()}
        self._chains: dict[tuple[Any, str], list[Provider]] = {}
        self._breakers: dict[tuple[Any, str], dict[str, float]] = {}

    def chain(self, notification: Notification, channel: str) -> list[Provider]:
        """The tenant's chain for the channel."""
        key = (notification.tenant_id, channel)
        if key not in self._chains:
            self._chains[key] = registry.chain_for(channel, notification.tenant)
        return self._chains[key]

    def open_circuits(self, notification: Notification, channel: str) -> dict[str, float]:
        """The chain's providers whose circuit breaker is open, with when it closes (epoch)."""
        key = (notification.tenant_id, channel)
        if key not in self._breakers:
            self._breakers[key] = circuit.open_until(
                scope=notification.tenant_id,
                providers=[
                    p.name for p in self.chain(notification, channel) if p.name not in registry.BUILTIN_ADAPTERS
                ],
            )
        return self._breakers[key]


def _suppressed(batch: SendBatch, delivery: Claimed, reason: str) -> dict[str, Any]:
    batch.tally.suppressed[(delivery.channel, reason)] += 1
    return {"id": delivery.id, "status": Status.SUPPRESSED, "suppression_reason": reason}


def _failed(batch: SendBatch, delivery: Claimed, status: str, code: str, reason: str, now: datetime) -> dict[str, Any]:
    if status == Status.DEAD:
        batch.tally.dead[delivery.channel] += 1
    return {"id": delivery.id, "status": status, "failed_at": now, "error_code": code, "last_error": reason[:2000]}


def delivery_unsendable(
    batch: SendBatch, context: RenderContext, delivery: Claimed, *, to: str
) -> dict[str, Any] | None:
    """The row that settles a delivery without a request, or None: no address (and no default
    destination in its chain), an address put on the suppression list since fan-out, or an
    `unknown` last attempt that came back past the budget because no report confirmed it."""
    notification = batch.notifications[delivery.notification_id]
    # No address: the chain's default destination, if any, serves it; the adapter applies it,
    # so `to` stays empty (a default webhook URL is a secret).
    if not to and not registry.has_default_destination(delivery.channel, context.chain(notification, delivery.channel)):
        return _suppressed(batch, delivery, Delivery.SuppressionReason.NO_ADDRESS)
    if delivery.id in batch.listed:
        return _suppressed(batch, delivery, Delivery.SuppressionReason.SUPPRESSED_ADDRESS)
    if delivery.attempts > batch.policy(notification, delivery.channel).max_attempts:
        reason = (
            f"The last attempt's answer was lost and {delivery.in_flight_provider or 'the provider'} "
            "did not report the message within the reconciliation window."
        )
        return _failed(batch, delivery, Status.DEAD, "unconfirmed", reason, context.now)
    return None


def delivery_message(
    batch: SendBatch, context: RenderContext, delivery: Claimed, *, to: str
) -> SendItem | dict[str, Any]:
    """The delivery's message and rendered content to send, or the row failing it when rendering or
    building raises: one recipient's content must never fail its batch-mates (a template error,
    a MemoryError from a runaway expression)."""
    notification = batch.notifications[delivery.notification_id]
    recipient = batch.recipients[delivery.recipient_id]
    try:
        rendered = {"to": to, **context.renderers[delivery.notification_id].render(delivery.channel, recipient)}
        message = registry.message_build(
            delivery_id=str(delivery.id),
            tenant_id=str(delivery.tenant_id),
            channel=delivery.channel,
            to=to,
            rendered=rendered,
            metadata=message_metadata(notification, delivery_id=str(delivery.id), attempt=delivery.attempts),
            recipient_id=delivery.recipient_id,
            email=context.emails[delivery.notification_id],
            signing_secret=(
                recipient_webhook_secret(recipient.webhook_secret_encrypted)
                if delivery.channel == Channel.WEBHOOK
                else ""
            ),
        )
    except RenderError as exc:
        return _failed(batch, delivery, Status.FAILED, "render_error", str(exc), context.now)
    except Exception as exc:  # MemoryError included: it is an Exception
        log.warning("rendering a delivery failed", extra={"delivery_id": str(delivery.id), "error": type(exc).__name__})
        reason = f"{type(exc).__name__} while rendering: {exc}"
        return _failed(batch, delivery, Status.FAILED, "render_error", reason, context.now)
    return SendItem(delivery, message, rendered)


def delivery_provider(batch: SendBatch, context: RenderContext, delivery: Claimed) -> Provider | ratelimits.Held:
    """The adapter to send through (the chain's turn for the attempt, skipping providers whose
    circuit is open), or a hold until a circuit closes: the provider's an earlier request may
    have reached, or every provider's."""
    notification = batch.notifications[delivery.notification_id]
    chain = context.chain(notification, delivery.channel)
    is_open = context.open_circuits(notification, delivery.channel)
    prefer = delivery.in_flight_provider
    if prefer in is_open and any(p.name == prefer for p in chain):
        # An earlier request to it may have gone out: a copy through another provider could not
        # be absorbed, so the retry waits for this provider's breaker instead of failing over.
        adapter, until, waits_for = None, is_open[prefer], prefer
    else:
        adapter = circuit.choose(chain, delivery.attempts, is_open=is_open, prefer=prefer)
        until, waits_for = (min(is_open.values()) if adapter is None else 0.0), ""
    if adapter is None:  # the provider it must wait for, or every provider, is failing
        return ratelimits.held_until_circuit(
            delivery_id=delivery.id, channel=delivery.channel, until_epoch=until, provider=waits_for
        )
    return adapter


def batch_render(batch: SendBatch) -> SendPlan:
    """Renders and builds each claimed delivery's message and chooses its provider, or settles it
    without a request (`delivery_unsendable`, or content that cannot be rendered) or holds it
    (its provider's circuit, or every provider's, is open)."""
    plan = SendPlan()
    context = RenderContext(batch)
    for delivery in batch.claimed:
        recipient = batch.recipients[delivery.recipient_id]
        to = registry.address_for(delivery.channel, recipient, batch.device_tokens.get(recipient.id, ()))
        item = delivery_unsendable(batch, context, delivery, to=to) or delivery_message(batch, context, delivery, to=to)
        if isinstance(item, dict):
            plan.settled.append(item)
            continue
        adapter = delivery_provider(batch, context, delivery)
        if isinstance(adapter, ratelimits.Held):
            plan.held.append(adapter)
            continue
        plan.work.setdefault(id(adapter), (adapter, []))[1].append(item)
    return plan


def batch_settle(batch: SendBatch, plan: SendPlan) -> None:
    """Records what rendering settled without a request, and its holds, in one transaction."""
    _flush(batch, rows=plan.settled, held=plan.held)
    batch.summary.statuses.update(str(row["status"]) for row in plan.settled)
    batch.summary.statuses.update(str(Status.PENDING) for _ in plan.held)


def batch_admit(batch: SendBatch, adapter: Provider, items: list[SendItem]) -> list[SendItem]:
    """The items the send limits let through now; the others are held (and recorded so at once)."""
    notifications = batch.notifications
    limits: dict[Any, Any] = {}
    candidates = []
    for item in items:
        notification = notifications[item.delivery.notification_id]
        if item.delivery.notification_id not in limits:
            limits[item.delivery.notification_id] = ratelimits.limits_for(notification.tenant.settings)
        candidates.append(
            ratelimits.Candidate(
                id=item.delivery.id,
                tenant_id=item.delivery.tenant_id,
                recipient_id=item.delivery.recipient_id,
                channel=item.delivery.channel,
                critical=notification.category.critical,
                limits=limits[item.delivery.notification_id],
            )
        )
    admitted, holds = ratelimits.admit(provider=adapter.name, candidates=candidates)
    if not holds:
        return items
    _flush(batch, held=holds)
    batch.summary.statuses.update(str(Status.PENDING) for _ in holds)
    allowed = {c.id for c in admitted}
    return [item for item in items if item.delivery.id in allowed]


def request_begin(batch: SendBatch, adapter: Provider, group: list[SendItem]) -> list[SendItem]:
    """The group's items this claim still holds, marked in flight to the adapter's provider (and
    their lease renewed) before its request; every open row's lease is renewed when a third of
    it has passed, so a live sender never loses its rows to the sweeper."""
    if time.monotonic() - batch.renewed >= batch.lease_seconds / 3:
        kept = reconnecting(
            lambda: deliveries_keep_lease(
                token=batch.token, delivery_ids=batch.open_ids, notification_ids=batch.notification_ids
            )
        )
        batch.renewed = time.monotonic()
        if batch.open_ids - kept:
            log.warning("rows were taken back from this sender", extra={"deliveries": len(batch.open_ids - kept)})
        batch.open_ids &= kept
    ids = [str(item.delivery.id) for item in group if str(item.delivery.id) in batch.open_ids]
    if adapter.name in registry.BUILTIN_ADAPTERS:  # no remote request: nothing can be in flight
        marked = set(ids)
    else:
        marked = reconnecting(
            lambda: deliveries_keep_lease(
                token=batch.token, delivery_ids=ids, provider=adapter.name, notification_ids=batch.notification_ids
            )
        )
    batch.open_ids -= set(ids) - marked
    return [item for item in group if str(item.delivery.id) in marked]


@dataclass
class RequestRows:
    """What one request's outcomes write: delivery rows, attempt rows, suppression-list entries."""

    deliveries: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    listed: list[dict[str, Any]] = field(default_factory=list)


def request_rows(
    batch: SendBatch,
    adapter: Provider,
    group: Sequence[SendItem],
    results: Sequence[SendResult],
    latency_ms: float,
    sent_at: datetime,
) -> RequestRows:
    """The rows one request's outcomes lead to (`outcome_fields`); tokens the provider called
    invalid are deactivated at once."""
    window = conf.get().RECONCILE_WINDOW_SECONDS if registry.adapter_flag(adapter, "reconciles", False) else None
    records_attempts = registry.adapter_flag(adapter, "records_attempts", True)
    rows = RequestRows()
    for item, result in zip(group, results, strict=True):
        delivery = item.delivery
        notification = batch.notifications[delivery.notification_id]
        fields = outcome_fields(
            adapter=adapter,
            result=result,
            attempt=delivery.attempts,
            policy=batch.policy(notification, delivery.channel),
            now=sent_at,
            reconcile_seconds=window,
        )
        rendered = batch.rendered_json(item.rendered)
        rows.deliveries.append({"id": delivery.id, "provider": adapter.name, "rendered": rendered, **fields})
        if result.invalid_tokens:
            devices_deactivate_tokens(
                tenant_id=delivery.tenant_id, tokens=result.invalid_tokens, reason="invalid_token"
            )
        reason = suppressions.suppression_reason_for(delivery.channel, result)
        if reason:
            rows.listed.append(
                {
                    "tenant_id": delivery.tenant_id,
                    "channel": delivery.channel,
                    "address": item.message.to,
                    "reason": reason,
                    "source": f"{adapter.name}:{result.code}",
                    "detail": result.detail,
                    "delivery_id": delivery.id,
                }
            )
        if records_attempts:
            rows.attempts.append(
                {
                    "delivery_id": delivery.id,
                    "number": delivery.attempts,
                    "provider": adapter.name,
                    "outcome": result.outcome.value,
                    "status_code": result.status_code,
                    "error_code": result.code[:64],
                    "error": result.detail[:2000],
                    "provider_message_id": result.message_id[:255],
                    "latency_ms": round(latency_ms),
                    "created_at": sent_at,
                }
            )
    return rows


def request_record(
    batch: SendBatch,
    adapter: Provider,
    group: list[SendItem],
    results: Sequence[SendResult],
    latency_ms: float,
    health: Counter[tuple[Any, str]],
) -> None:
    """Records one request's outcomes (see the module docstring) in one transaction, then counts
    those this claim still held: in `health` for the circuit breaker, in the batch's metrics."""
    sent_at = timezone.now()
    rows = request_rows(batch, adapter, group, results, latency_ms, sent_at)
    settled = [str(item.delivery.id) for item, result in zip(group, results, strict=True) if not result.ambiguous]
    remote = adapter.name not in registry.BUILTIN_ADAPTERS
    owned = _flush(
        batch, rows=rows.deliveries, attempts=rows.attempts, listed=rows.listed, remote=remote, settled=settled
    )
    for item, result, row in zip(group, results, rows.deliveries, strict=True):
        delivery = item.delivery
        if str(delivery.id) not in owned:
            continue
        if result.accepted:
            health[(delivery.tenant_id, "ok")] += 1
        elif result.outcome is Outcome.TRANSIENT:
            health[(delivery.tenant_id, "failed")] += 1
        notification = batch.notifications[delivery.notification_id]
        accepted_from = notification.scheduled_at or notification.created_at
        batch.tally.add(
            channel=delivery.channel,
            provider=adapter.name,
            result=result,
            status=row["status"],
            latency=max((sent_at - accepted_from).total_seconds(), 0),
        )
        batch.summary.statuses[str(row["status"])] += 1


def batch_send(batch: SendBatch, adapter: Provider, items: list[SendItem]) -> None:
    """Sends one adapter's share of the batch, one provider request at a time, each recorded
    before the next; stops when the time budget is used up (the rest is released)."""
    if batch.out_of_time():
        batch.summary.released.extend(str(item.delivery.id) for item in items)
        return
    groups = _request_groups(adapter, batch_admit(batch, adapter, items))
    health: Counter[tuple[Any, str]] = Counter()
    with provider_session(adapter):  # e.g. one SMTP connection for the batch's single sends
        for position, group in enumerate(groups):
            if batch.out_of_time():
                batch.summary.released.extend(str(item.delivery.id) for later in groups[position:] for item in later)
                break
            group = request_begin(batch, adapter, group)
            if not group:
                continue
            results, latency_ms = request_call(adapter, [item.message for item in group])
            _log_answer(adapter, group, results, latency_ms)
            request_record(batch, adapter, group, results, latency_ms, health)
    # The built-in adapters (inbox, sinks) are not remote services: no breaker.
    for tenant_id in {t for t, _ in health} if adapter.name not in registry.BUILTIN_ADAPTERS else ():
        circuit.record(
            scope=tenant_id,
            provider=adapter.name,
            failures=health[(tenant_id, "failed")],
            successes=health[(tenant_id, "ok")],
        )


def batch_finish(batch: SendBatch, queue: str | None) -> None:
    """Releases what the time budget left unsent (republished at once), counts, and completes
    the notifications that have settled."""
    batch.tally.flush()
    released = [pk for pk in batch.summary.released if pk in batch.open_ids]
    if released:
        _release(released, timezone.now(), batch.token, batch.notification_ids)
        notification_of = {str(c.id): str(c.notification_id) for c in batch.claimed}
        notification_ids = sorted({notification_of[pk] for pk in released})
        publish_on_commit("signalbox.notifications.send_batch", released, notification_ids, queue=queue)
    batch.summary.released = released
    for notification_id, notification in batch.notifications.items():
        notification_complete_if_settled(
            notification_id=notification_id, tenant_id=notification.tenant_id, audience=batch.audience
        )


def deliveries_send(
    *, delivery_ids: Sequence[Any], queue: str | None = None, notification_ids: Sequence[Any] | None = None
) -> SendSummary:
    """Sends a batch of deliveries (see the module docstring). Safe to run twice for the same ids.
    `notification_ids`: those of the deliveries (the send message carries them since partitions;
    an older message has none, and its claim probes every partition)."""
    batch = batch_claim(delivery_ids, notification_ids)
    if not batch.claimed:
        return batch.summary
    batch_load(batch)
    plan = batch_render(batch)
    batch_settle(batch, plan)
    for adapter, items in plan.work.values():
        batch_send(batch, adapter, items)
    batch_finish(batch, queue)
    return batch.summary


# --- Replay ----------------------------------------------------------------------------------------


def deliveries_replay(*, tenant_id: Any, delivery_ids: Sequence[Any], actor: Actor = SYSTEM) -> int:
    """Gives failed and dead deliveries a fresh start: `pending` now, with a full retry budget.

    Their attempt history stays. The dispatcher publishes them within seconds; a notification
    that had completed goes back to `dispatched` until they settle. Returns how many were replayed.
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(of=("self",))
            .filter(tenant_id=tenant_id, pk__in=delivery_ids, status__in=[Status.FAILED, Status.DEAD])
            .exclude(notification__status=Notification.Status.CANCELLED)
            .values_list("pk", "notification_id")
        )
        if not rows:
            return 0
        Delivery.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            status=Status.PENDING,
            next_attempt_at=now,
            attempts=0,
            failed_at=None,
            error_code="",
            last_error="",
            lease_expires_at=None,
        )
        notification_ids = {n for _, n in rows}
        Notification.objects.filter(pk__in=notification_ids, status=Notification.Status.COMPLETED).update(
            status=Notification.Status.DISPATCHED, completed_at=None, updated_at=now
        )
        tenant = Tenant.objects.get(pk=tenant_id)
        for notification_id in notification_ids:
            audit_record(
                action="deliveries.replayed",
                tenant=tenant,
                actor=actor,
                target_type="notifications.notification",
                target_id=str(notification_id),
                data={"deliveries": sum(1 for _, n in rows if n == notification_id)},
            )
    return len(rows)
