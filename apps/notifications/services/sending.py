"""Sending deliveries: claim, render, call the channel adapter, record the outcome.

A send task carries a batch of delivery ids. For each batch:

1. **claim** — one conditional UPDATE moves the rows from `queued` to `sending` with a lease
   (`delivery_claim`); a row another worker claimed, or one that was cancelled, is skipped, so
   no two workers ever send the same delivery;
2. render and build each `Message` (the address is resolved here, at send time);
3. call the adapter chosen for the attempt (the chain's turn for it, skipping providers whose
   circuit breaker is open: `apps/providers/circuit.py`) — a batch call when the adapter has
   `send_batch`, otherwise one message per call — after the send limits
   (`ratelimits.py`) let it through; a delivery over a limit, an address put on the
   suppression list since fan-out, or a chain whose every provider is failing is held or
   suppressed instead (see docs/reliability.md);
4. **record** outcomes as soon as they come back (each batch call, or each single message), in
   one UPDATE (guarded by `status = 'sending'`) plus the DeliveryAttempt rows:
   accepted -> `sent` (or `delivered`), transient -> `pending` with `next_attempt_at`
   (exponential backoff with full jitter, per tenant and channel, never sooner than the
   provider's retry_after; the dispatcher re-queues it), or `dead` after the last attempt;
   permanent -> `failed`, no retry (and the address on the suppression list when the error
   condemns it). A lost database connection is survived: the record is written again on a new
   one, never twice. The same transaction emits the outcomes' platform events (`announce.py`).

An adapter with a `session()` (SMTP: one connection) keeps it open around the batch's single
sends (`provider_session`). Each provider call is one log line ("provider answered") with the
notification and delivery ids.

Retries are rows in PostgreSQL, never long Celery countdowns. A worker that dies mid-send
leaves rows in `sending`; the sweeper takes them back when the lease runs out.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.db import reconnecting
from apps.core.publish import publish_on_commit
from apps.notifications import channels as registry
from apps.notifications import conf
from apps.notifications.models import Delivery, Device, Notification, Recipient
from apps.notifications.rendering import RenderError
from apps.notifications.services import bulk, ratelimits, suppressions
from apps.notifications.services.announce import Audience, deliveries_announce
from apps.notifications.services.bulk import attempts_insert, deliveries_record
from apps.notifications.services.content import NotificationRenderer, email_options, message_metadata
from apps.notifications.services.recipients import devices_deactivate_tokens, recipient_webhook_secret
from apps.observability import metrics
from apps.providers import circuit
from apps.providers.base import Channel, Message, Outcome, Provider, SendResult, provider_session

log = logging.getLogger(__name__)

Status = Delivery.Status


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    cap_seconds: float


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
    ceiling = min(policy.cap_seconds, policy.base_seconds * 2 ** max(attempt - 1, 0))
    delay = rng() * ceiling
    if retry_after:
        delay = max(delay, float(retry_after))
    return delay


def outcome_fields(
    *, adapter: Any, result: SendResult, attempt: int, policy: RetryPolicy, now: datetime
) -> dict[str, Any]:
    """The delivery columns a send result leads to (the same rule for fan-out's inline sends)."""
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
    if result.outcome is Outcome.TRANSIENT and attempt < policy.max_attempts:
        delay = backoff_seconds(attempt=attempt, policy=policy, retry_after=result.retry_after)
        return {"status": Status.PENDING, "next_attempt_at": now + timedelta(seconds=delay), **error}
    if result.outcome is Outcome.TRANSIENT:
        return {"status": Status.DEAD, "next_attempt_at": None, "failed_at": now, **error}
    return {"status": Status.FAILED, "next_attempt_at": None, "failed_at": now, **error}


# --- Claim ---------------------------------------------------------------------------------------


class Claimed(NamedTuple):
    id: Any
    tenant_id: Any
    notification_id: Any
    recipient_id: int
    channel: str
    attempts: int


_CLAIM_SQL = (
    "UPDATE {table} SET status = 'sending', lease_expires_at = %s, attempts = attempts + 1 "
    "WHERE id = ANY(%s::uuid[]) AND status = 'queued' "
    "RETURNING id, tenant_id, notification_id, recipient_id, channel, attempts"
)


def deliveries_claim(*, delivery_ids: Sequence[Any], now: datetime | None = None) -> list[Claimed]:
    """Moves `queued` rows to `sending` with a lease and one more attempt, in one conditional
    UPDATE; returns the rows won.

    The `status = 'queued'` condition is re-checked on each row after any concurrent claimer's
    lock is released, so of two workers given the same id exactly one gets it.
    """
    if not delivery_ids:
        return []
    now = now or timezone.now()
    lease_until = now + timedelta(seconds=conf.get().SEND_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_SQL.format(table=Delivery._meta.db_table), [lease_until, [str(pk) for pk in delivery_ids]]
            )
            return [Claimed(*row) for row in cursor.fetchall()]
    with transaction.atomic():
        won = list(
            Delivery.objects.select_for_update()
            .filter(pk__in=delivery_ids, status=Status.QUEUED)
            .values_list("pk", flat=True)
        )
        Delivery.objects.filter(pk__in=won, status=Status.QUEUED).update(
            status=Status.SENDING, lease_expires_at=lease_until, attempts=F("attempts") + 1
        )
        return [
            Claimed(*row)
            for row in Delivery.objects.filter(pk__in=won).values_list(
                "id", "tenant_id", "notification_id", "recipient_id", "channel", "attempts"
            )
        ]


def delivery_claim(*, delivery_ids: Sequence[Any], now: datetime | None = None) -> list[Any]:
    """The ids `deliveries_claim` won."""
    return [row.id for row in deliveries_claim(delivery_ids=delivery_ids, now=now)]


def _release(ids: Sequence[Any], now: datetime) -> int:
    """Gives claimed but unsent rows back to the queue (the attempt did not happen)."""
    return Delivery.objects.filter(pk__in=ids, status=Status.SENDING).update(
        status=Status.QUEUED, lease_expires_at=None, attempts=F("attempts") - 1, queued_at=now
    )


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
class _Work:
    delivery: Claimed
    message: Message
    rendered: dict[str, Any]


def _call_adapter(adapter: Provider, messages: Sequence[Message]) -> tuple[list[SendResult], float]:
    """Results in order and the milliseconds per message; an adapter that raises is a transient failure."""
    started = time.perf_counter()
    try:
        batch = getattr(adapter, "send_batch", None)
        results = list(batch(messages)) if callable(batch) else [adapter.send(m) for m in messages]
        if len(results) != len(messages):
            raise RuntimeError(f"{adapter.name} returned {len(results)} results for {len(messages)} messages")
    except Exception as exc:
        log.exception("channel adapter raised", extra={"provider": adapter.name})
        detail = f"{type(exc).__name__}: {exc}"
        results = [SendResult.transient(adapter.name, detail, code="adapter_error") for _ in messages]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return results, elapsed_ms / max(len(messages), 1)


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
        if status == Status.PENDING:
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


def _groups(adapter: Provider, items: list[_Work]) -> list[list[_Work]]:
    """One call for an adapter whose `send_batch` is one provider request (SendGrid, the sinks);
    otherwise one message per call, each recorded as soon as it is answered, so a worker killed
    mid-batch leaves at most one send unrecorded. SMTP is the latter: one message per SMTP
    transaction, sharing a connection through the adapter's `session()` (apps/providers/base.py)."""
    if callable(getattr(adapter, "send_batch", None)):
        return [items]
    return [[item] for item in items]


def _log_answer(adapter: Provider, group: Sequence[_Work], results: Sequence[SendResult], latency_ms: float) -> None:
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


def _flush(
    *,
    rows: list[dict[str, Any]],
    attempts: list[dict[str, Any]],
    held: Sequence[ratelimits.Held] = (),
    listed: Sequence[dict[str, Any]] = (),
    tenant_of: Mapping[Any, Any],
    audience: Audience,
    now: datetime,
) -> None:
    """Writes outcomes of claimed rows in one transaction, with their platform events
    (`announce.py`; `tenant_of` maps delivery ids to tenant ids). When the connection is lost it
    writes, on a new one, only what is still `sending` (the lost transaction may have committed),
    so nothing is recorded twice and nothing the provider answered is forgotten."""
    if not (rows or attempts or held or listed):
        return
    to_record, to_insert, to_hold = list(rows), list(attempts), list(held)

    def write() -> None:
        with transaction.atomic():
            written = {str(pk) for pk in deliveries_record(to_record)}
            deliveries_announce(
                ((tenant_of[r["id"]], r["id"], r["status"]) for r in to_record if str(r["id"]) in written), audience
            )
            attempts_insert(to_insert, now=now)
            ratelimits.deliveries_hold(to_hold)
            suppressions.suppressions_add(listed)

    def still_sending() -> None:
        nonlocal to_record, to_insert, to_hold
        staged = getattr(bulk, "_staged", None)
        if isinstance(staged, set):
            staged.clear()  # temporary staging tables died with the connection
        ids = {r["id"] for r in rows} | {a["delivery_id"] for a in attempts} | {h.id for h in held}
        sending = Delivery.objects.filter(pk__in=ids, status=Status.SENDING).values_list("pk", flat=True)
        open_ids = {str(pk) for pk in sending}
        to_record = [r for r in rows if str(r["id"]) in open_ids]
        to_insert = [a for a in attempts if str(a["delivery_id"]) in open_ids]
        to_hold = [h for h in held if str(h.id) in open_ids]

    reconnecting(write, before_retry=lambda: reconnecting(still_sending))


def deliveries_send(*, delivery_ids: Sequence[Any], queue: str | None = None) -> SendSummary:
    """Sends a batch of deliveries (see the module docstring). Safe to run twice for the same ids."""
    started = time.monotonic()
    budget = conf.get().SEND_TIME_BUDGET_SECONDS
    summary = SendSummary()
    claimed = reconnecting(lambda: deliveries_claim(delivery_ids=delivery_ids))
    summary.claimed = len(claimed)
    if not claimed:
        return summary
    tenant_of = {d.id: d.tenant_id for d in claimed}
    audience = Audience()  # who listens to delivery events, asked once per tenant for the batch

    def load() -> tuple[dict[int, Any], dict[Any, Notification], dict[int, list[str]], set[Any]]:
        recipients = {
            r.id: r
            for r in Recipient.objects.filter(id__any=list({d.recipient_id for d in claimed})).values_list(
                *RECIPIENT_FIELDS, named=True
            )
        }
        notifications = {
            n.pk: n
            for n in Notification.objects.filter(pk__in={d.notification_id for d in claimed}).select_related(
                "tenant", "category", "template", "template_version"
            )
        }
        return recipients, notifications, _device_tokens(claimed), _listed(claimed, notifications, recipients)

    recipients, notifications, tokens, listed = reconnecting(load)
    renderers = {
        pk: NotificationRenderer(n, default_locale=str((n.tenant.settings or {}).get("default_locale", "")))
        for pk, n in notifications.items()
    }
    policies: dict[tuple[Any, str], RetryPolicy] = {}
    emails = {pk: email_options(n) for pk, n in notifications.items()}
    limits = {pk: ratelimits.limits_for(n.tenant.settings) for pk, n in notifications.items()}
    now = timezone.now()
    tally = _Tally()
    rows: list[dict[str, Any]] = []
    held: list[ratelimits.Held] = []
    work: dict[int, tuple[Provider, list[_Work]]] = {}
    chains: dict[tuple[Any, str], list[Provider]] = {}
    breakers: dict[tuple[Any, str], dict[str, float]] = {}

    def chain_of(notification: Notification, channel: str) -> list[Provider]:
        """The tenant's chain for the channel, resolved once per batch."""
        key = (notification.tenant_id, channel)
        if key not in chains:
            chains[key] = registry.chain_for(channel, notification.tenant)
        return chains[key]

    for delivery in claimed:
        notification = notifications[delivery.notification_id]
        recipient = recipients[delivery.recipient_id]
        to = registry.address_for(delivery.channel, recipient, tokens.get(recipient.id, ()))
        # No address: the chain's default destination, if any, serves it; the adapter applies it,
        # so `to` stays empty (a default webhook URL is a secret).
        if not to and not registry.has_default_destination(delivery.channel, chain_of(notification, delivery.channel)):
            rows.append({"id": delivery.id, "status": Status.SUPPRESSED, "suppression_reason": "no_address"})
            tally.suppressed[(delivery.channel, "no_address")] += 1
            continue
        if delivery.id in listed:
            listed_reason = Delivery.SuppressionReason.SUPPRESSED_ADDRESS
            rows.append({"id": delivery.id, "status": Status.SUPPRESSED, "suppression_reason": listed_reason})
            tally.suppressed[(delivery.channel, listed_reason)] += 1
            continue
        try:
            rendered = {"to": to, **renderers[notification.pk].render(delivery.channel, recipient)}
        except RenderError as exc:
            rows.append(
                {
                    "id": delivery.id,
                    "status": Status.FAILED,
                    "failed_at": now,
                    "error_code": "render_error",
                    "last_error": str(exc),
                }
            )
            continue
        chain_key = (notification.tenant_id, delivery.channel)
        chain = chain_of(notification, delivery.channel)
        if chain_key not in breakers:
            breakers[chain_key] = circuit.open_until(
                scope=notification.tenant_id,
                providers=[p.name for p in chain if p.name not in registry.BUILTIN_ADAPTERS],
            )
        adapter = circuit.choose(chain, delivery.attempts, is_open=breakers[chain_key])
        if adapter is None:  # every provider of the chain is failing: wait for the first to recover
            until = min(breakers[chain_key].values())
            held.append(
                ratelimits.held_until_circuit(delivery_id=delivery.id, channel=delivery.channel, until_epoch=until)
            )
            continue
        message = registry.message_build(
            delivery_id=str(delivery.id),
            tenant_id=str(delivery.tenant_id),
            channel=delivery.channel,
            to=to,
            rendered=rendered,
            metadata=message_metadata(notification, delivery_id=str(delivery.id), attempt=delivery.attempts),
            recipient_id=delivery.recipient_id,
            email=emails[notification.pk],
            signing_secret=(
                recipient_webhook_secret(recipient.webhook_secret_encrypted)
                if delivery.channel == Channel.WEBHOOK
                else ""
            ),
        )
        # Keyed by instance: two tenants' adapters may share a name but not credentials.
        work.setdefault(id(adapter), (adapter, []))[1].append(_Work(delivery, message, rendered))

    for adapter, items in work.values():
        candidates = [
            ratelimits.Candidate(
                id=item.delivery.id,
                tenant_id=item.delivery.tenant_id,
                recipient_id=item.delivery.recipient_id,
                channel=item.delivery.channel,
                critical=notifications[item.delivery.notification_id].category.critical,
                limits=limits[item.delivery.notification_id],
            )
            for item in items
        ]
        admitted, holds = ratelimits.admit(provider=adapter.name, candidates=candidates)
        held.extend(holds)
        if holds:
            allowed = {c.id for c in admitted}
            items = [item for item in items if item.delivery.id in allowed]
        records_attempts = registry.adapter_flag(adapter, "records_attempts", True)
        health: Counter[tuple[Any, str]] = Counter()
        groups = _groups(adapter, items)
        with provider_session(adapter):  # e.g. one SMTP connection for the batch's single sends
            for position, group in enumerate(groups):
                if time.monotonic() - started > budget:
                    summary.released.extend(str(item.delivery.id) for later in groups[position:] for item in later)
                    break
                results, latency_ms = _call_adapter(adapter, [item.message for item in group])
                sent_at = timezone.now()
                _log_answer(adapter, group, results, latency_ms)
                done: list[dict[str, Any]] = []
                tried: list[dict[str, Any]] = []
                listed_now: list[dict[str, Any]] = []
                for item, result in zip(group, results, strict=True):
                    delivery = item.delivery
                    notification = notifications[delivery.notification_id]
                    policy_key = (notification.pk, delivery.channel)
                    if policy_key not in policies:
                        policies[policy_key] = retry_policy_for(notification.tenant.settings, delivery.channel)
                    fields = outcome_fields(
                        adapter=adapter,
                        result=result,
                        attempt=delivery.attempts,
                        policy=policies[policy_key],
                        now=sent_at,
                    )
                    done.append({"id": delivery.id, "provider": adapter.name, "rendered": item.rendered, **fields})
                    if result.invalid_tokens:
                        devices_deactivate_tokens(
                            tenant_id=delivery.tenant_id, tokens=result.invalid_tokens, reason="invalid_token"
                        )
                    reason = suppressions.suppression_reason_for(delivery.channel, result)
                    if reason:
                        listed_now.append(
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
                    if result.accepted:
                        health[(delivery.tenant_id, "ok")] += 1
                    elif result.outcome is Outcome.TRANSIENT:
                        health[(delivery.tenant_id, "failed")] += 1
                    if records_attempts:
                        tried.append(
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
                    accepted_from = notification.scheduled_at or notification.created_at
                    tally.add(
                        channel=delivery.channel,
                        provider=adapter.name,
                        result=result,
                        status=fields["status"],
                        latency=max((sent_at - accepted_from).total_seconds(), 0),
                    )
                _flush(rows=done, attempts=tried, listed=listed_now, tenant_of=tenant_of, audience=audience, now=now)
                summary.statuses.update(str(row["status"]) for row in done)
        # The built-in adapters (inbox, sinks) are not remote services: no breaker.
        for tenant_id in {t for t, _ in health} if adapter.name not in registry.BUILTIN_ADAPTERS else ():
            circuit.record(
                scope=tenant_id,
                provider=adapter.name,
                failures=health[(tenant_id, "failed")],
                successes=health[(tenant_id, "ok")],
            )

    _flush(rows=rows, attempts=[], held=held, tenant_of=tenant_of, audience=audience, now=now)
    tally.flush()
    summary.statuses.update(str(row["status"]) for row in rows)
    summary.statuses.update(str(Status.PENDING) for _ in held)
    if summary.released:
        _release(summary.released, timezone.now())
        from apps.notifications.tasks import send_batch

        publish_on_commit(send_batch, summary.released, queue=queue)
    from apps.notifications.services.notifications import notification_complete_if_settled

    for notification_id, notification in notifications.items():
        notification_complete_if_settled(
            notification_id=notification_id, tenant_id=notification.tenant_id, audience=audience
        )
    return summary


# --- Replay ----------------------------------------------------------------------------------------


def deliveries_replay(*, tenant_id: Any, delivery_ids: Sequence[Any], actor: tuple[str, str] | None = None) -> int:
    """Gives failed and dead deliveries a fresh start: `pending` now, with a full retry budget.

    Their attempt history stays. The dispatcher publishes them within seconds; a notification
    that had completed goes back to `dispatched` until they settle. Returns how many were replayed.
    """
    from apps.observability.audit import audit_record
    from apps.tenancy.models import Tenant

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
