"""Fan-out: turning one notification into one delivery per recipient and channel, in chunks.

`notification_fan_out` plans: it splits the audience into chunks (slices of an explicit list,
or recipient-id ranges of a topic found with one window query) and publishes one task per
chunk. `fanout_chunk_run` expands one chunk in one transaction with a constant number of
queries whatever the chunk size: load the recipients, their preferences, devices and prior
duplicates (dedup keys), decide each (recipient, channel), insert every delivery with one bulk INSERT,
and publish send batches on commit. In a chunk of FANOUT_SHARED_ROWS_MIN recipients or more the
in-app rows, alike but for id, recipient and address, are built by PostgreSQL from arrays
(`SharedRows`, bulk.deliveries_insert_shared) instead of being encoded one by one for the COPY.

Each decision, in order: duplicate dedup_key in the window
-> suppressed/duplicate; (non-critical only) global unsubscribe -> suppressed/unsubscribed,
channel off -> suppressed/opted_out; no address (and, for chat, no default destination in the
tenant's chain) -> suppressed/no_address; the address on the suppression list ->
suppressed/suppressed_address; (non-critical,
interrupting channels) a digest preference or the notification's digest rule -> digest (its
window is flushed later, quiet hours applied then), inside quiet hours -> deferred until the
window ends; otherwise queued (or, for an inline adapter such as the in-app inbox,
delivered in this transaction).

A chunk is idempotent: its row is locked while it runs and marked done in the same
transaction, and (notification, recipient, channel) is unique, inserted with ON CONFLICT DO
NOTHING (RETURNING what went in) as the last guard.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.core.ports import event_bus
from apps.core.publish import publish_on_commit
from apps.core.retry import RetryPolicy
from apps.notifications import channels as registry
from apps.notifications import conf
from apps.notifications.adapters import InAppAdapter
from apps.notifications.models import (
    Delivery,
    Device,
    Digest,
    FanoutChunk,
    Notification,
    Preference,
    Recipient,
    TopicMembership,
    uuid7_many,
)
from apps.notifications.rendering import RenderError
from apps.notifications.services.announce import Audience, deliveries_announce, notification_announce_sent
from apps.notifications.services.bulk import JsonText, deliveries_insert, deliveries_insert_shared
from apps.notifications.services.content import NotificationRenderer, message_metadata, recipient_fields_read
from apps.notifications.services.digest import digest_enqueue
from apps.notifications.services.inbox import inbox_publish
from apps.notifications.services.notifications import (
    notification_complete_if_settled,
    notification_lock,
    queue_for,
)
from apps.notifications.services.preferences import (
    INTERRUPTING_CHANNELS,
    EffectivePreference,
    PreferenceIndex,
    quiet_hours_until,
    zone,
)
from apps.notifications.services.sending import outcome_fields, retry_policy_for
from apps.notifications.services.suppressions import suppressed_pairs
from apps.observability import metrics
from apps.providers.base import Channel, SendResult

log = logging.getLogger(__name__)

Status = Delivery.Status
Reason = Delivery.SuppressionReason
RECIPIENT_FIELDS = (
    "id",
    "tenant_id",
    "external_id",
    "name",
    "email",
    "phone",
    "locale",
    "timezone",
    "chat_address",
    "webhook_url",
    "data",
    "unsubscribed_at",
)
# What deciding any row reads of a recipient (the rest: its channels' addresses, what templates read).
DECISION_FIELDS = {"id", "locale", "timezone", "unsubscribed_at"}


# --- Planning ------------------------------------------------------------------------------------


def _topic_boundaries(topic_id: int, size: int) -> tuple[list[int], int]:
    """(first recipient id of each chunk, member count) in one pass over the membership index."""
    table = TopicMembership._meta.db_table
    sql = (
        "SELECT recipient_id, total FROM ("  # noqa: S608 (table name is ours)
        "  SELECT recipient_id, ROW_NUMBER() OVER (ORDER BY recipient_id) AS rn, COUNT(*) OVER () AS total"
        f"  FROM {table} WHERE topic_id = %s"
        ") ranked WHERE (rn - 1) %% %s = 0 ORDER BY recipient_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [topic_id, size])
        rows = cursor.fetchall()
    return [r[0] for r in rows], (int(rows[0][1]) if rows else 0)


def _plan_chunks(notification: Notification, size: int) -> tuple[list[FanoutChunk], int]:
    now = timezone.now()
    if notification.recipient_ids is not None:
        total = len(notification.recipient_ids)
        chunks = [
            FanoutChunk(notification=notification, index=i, start=start, end=min(start + size, total), published_at=now)
            for i, start in enumerate(range(0, total, size))
        ]
        return chunks, total
    if notification.topic_id is None:
        return [], 0
    bounds, total = _topic_boundaries(notification.topic_id, size)
    chunks = [
        FanoutChunk(
            notification=notification,
            index=i,
            id_from=low,
            id_to=bounds[i + 1] if i + 1 < len(bounds) else None,
            published_at=now,
        )
        for i, low in enumerate(bounds)
    ]
    return chunks, total


def notification_fan_out(*, notification_id: Any) -> list[int]:
    """Plans an accepted notification's chunks; returns their ids.

    With several chunks, one task per chunk is published on commit; with a single chunk the
    caller runs it right away (saving a queue hop for the common one-recipient case). A
    notification not in `accepted` is left alone, so a duplicate task does nothing.
    """
    size = conf.get().FANOUT_CHUNK_SIZE
    now = timezone.now()
    with transaction.atomic():
        notification = Notification.objects.select_for_update().filter(pk=notification_id).first()
        if notification is None or notification.status != Notification.Status.ACCEPTED:
            return []
        chunks, total = _plan_chunks(notification, size)
        FanoutChunk.objects.bulk_create(chunks)
        notification.recipient_count = total
        notification.chunks_total = len(chunks)
        notification.fanout_started_at = now
        notification.status = Notification.Status.FANNING_OUT if chunks else Notification.Status.COMPLETED
        if not chunks:
            notification.dispatched_at = notification.completed_at = now
        notification.save(
            update_fields=[
                "recipient_count",
                "chunks_total",
                "fanout_started_at",
                "status",
                "dispatched_at",
                "completed_at",
                "updated_at",
            ]
        )
        if not chunks and event_bus().listeners_of(notification.tenant_id).observe("notification.sent"):
            notification_announce_sent(notification_id=notification.pk)
        ids = [c.pk for c in chunks]
        if len(ids) > 1:
            for chunk_id in ids:
                publish_on_commit(
                    "signalbox.notifications.fan_out_chunk", chunk_id, queue=queue_for(notification.priority)
                )
    return ids


# --- One chunk -----------------------------------------------------------------------------------


@dataclass
class ChunkResult:
    chunk_id: int
    recipients: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    queued: dict[str, list[str]] = field(default_factory=dict)
    cancelled: bool = False


class _Cancelled(Exception):
    pass


Row = dict[str, Any]


def recipient_columns(notification: Notification) -> tuple[str, ...]:
    """The RECIPIENT_FIELDS a chunk of this notification reads: what deciding reads, its channels'
    address columns and what its templates read (`data`, a JSON column, only when they use it)."""
    needed = DECISION_FIELDS | set(recipient_fields_read(notification))
    needed |= {registry.ADDRESS_FIELDS[c] for c in notification.channels if c in registry.ADDRESS_FIELDS}
    return tuple(name for name in RECIPIENT_FIELDS if name in needed)


def _chunk_recipients(notification: Notification, chunk: FanoutChunk) -> list[Any]:
    """The chunk's recipients as light named tuples (attribute access, no model instances), with
    only the columns the chunk reads (`recipient_columns`)."""
    qs = Recipient.objects.filter(tenant_id=notification.tenant_id)
    if chunk.start is not None:
        ids = (notification.recipient_ids or [])[chunk.start : chunk.end]
        qs = qs.filter(id__any=ids)
    elif notification.topic_id is None:
        return []
    else:
        qs = qs.filter(topic_memberships__topic_id=notification.topic_id)
        if chunk.id_from is not None:
            qs = qs.filter(pk__gte=chunk.id_from)
        if chunk.id_to is not None:
            qs = qs.filter(pk__lt=chunk.id_to)
    return list(qs.order_by("pk").values_list(*recipient_columns(notification), named=True))


def _duplicates(notification: Notification, recipient_ids: Sequence[int], now: datetime) -> set[tuple[int, str]]:
    """(recipient, channel) pairs that got this dedup_key from another notification in the window.

    Chunks of notifications sharing a dedup_key take a lock on the key, so two racing
    notifications cannot both decide "not a duplicate".
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"dedup:{notification.tenant_id}:{notification.dedup_key}"],
            )
    since = now - timedelta(seconds=notification.dedup_window_seconds)
    return set(
        Delivery.objects.filter(
            tenant_id=notification.tenant_id,
            dedup_key=notification.dedup_key,
            recipient__any=recipient_ids,
            created_at__gte=since,
        )
        .exclude(notification_id=notification.pk)
        .exclude(status__in=[Status.SUPPRESSED, Status.CANCELLED])
        .values_list("recipient_id", "channel")
    )


def _has_address(channel: str, recipient: Any, with_devices: set[int], defaults: set[str]) -> bool:
    """`defaults`: the channels whose chain serves a recipient without an address."""
    if channel == Channel.PUSH:
        return recipient.id in with_devices
    return bool(registry.address_for(channel, recipient)) or channel in defaults


def _default_destinations(notification: Notification, channels: Sequence[str], recipients: Sequence[Any]) -> set[str]:
    """The channels whose chain has a default destination (a chat default channel or webhook), asked
    once per chunk and only for a channel on which some recipient of the chunk has no address."""
    return {
        channel
        for channel in channels
        if channel in registry.DEFAULT_DESTINATION_CHANNELS
        and any(not registry.address_for(channel, r) for r in recipients)
        and registry.serves_without_address(channel, notification.tenant)
    }


@dataclass
class ChunkContext:
    """What deciding a chunk's deliveries needs, loaded at once for all its recipients."""

    notification: Notification
    now: datetime
    recipients: list[Any]
    preferences: PreferenceIndex
    with_devices: set[int]  # recipients with an active device (push)
    duplicates: set[tuple[int, str]]  # (recipient, channel) that got this dedup_key already
    listed: set[tuple[int, str]]  # (recipient, channel) whose address is on the suppression list
    defaults: set[str]  # channels whose chain serves a recipient without an address
    inline: dict[str, Any]  # channel -> its inline adapter (the in-app inbox)
    renderer: NotificationRenderer
    policy: RetryPolicy
    critical: bool = False  # the category's: asked for every row, read once
    shared: set[str] = field(default_factory=set)  # inline channels whose rows PostgreSQL builds (SharedRows)


class SharedRows:
    """A chunk's rows on an inline channel that accepts every message, kept as columns: they differ
    only by id, recipient and address (the rest of their rendering is one content per locale), so
    PostgreSQL builds them from arrays (`deliveries_insert_shared`) instead of Python encoding
    each row for a COPY."""

    def __init__(self) -> None:
        self.ids: list[Any] = []
        self.recipient_ids: list[int] = []
        self.addresses: list[str | None] = []
        self.parts: list[int] = []  # index into tails
        self.tails: list[str] = []  # per content: the JSON object of its locale and content
        self._known: dict[int, tuple[Any, Any, int]] = {}  # id(content) -> (content, locale, part); content kept alive
        self.fields: dict[str, Any] = {}  # the adapter's answer, the same on every row

    def add(self, delivery_id: Any, recipient_id: int, to: Any, rendered: dict[str, Any]) -> bool:
        """Takes the row of a rendering (`{"locale", "content"}`, NotificationRenderer.render) to
        address `to` if that is a string or None (False: not taken)."""
        if not (to is None or type(to) is str):
            return False
        content, locale = rendered["content"], rendered["locale"]
        known = self._known.get(id(content))
        if known is None or known[0] is not content or known[1] != locale:
            known = self._known[id(content)] = (content, locale, len(self.tails))
            self.tails.append(json.dumps({"locale": locale, "content": content}))
        self.ids.append(delivery_id)
        self.recipient_ids.append(recipient_id)
        self.addresses.append(to)
        self.parts.append(known[2])
        return True


@dataclass
class ChunkDecisions:
    """A chunk's delivery rows as decided, and what goes on from them."""

    rows: list[Row] = field(default_factory=list)
    digests: list[Row] = field(default_factory=list)
    inline: dict[str, list[tuple[Row, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    suppressed: Counter[tuple[str, str]] = field(default_factory=Counter)
    shared: dict[str, SharedRows] = field(default_factory=lambda: defaultdict(SharedRows))
    base: Row = field(default_factory=dict)  # the fields every row of the chunk shares


def chunk_context(notification: Notification, recipients: list[Any], now: datetime) -> ChunkContext:
    """Loads preferences, devices, prior duplicates, listed addresses and default destinations for
    the chunk's recipients, with a constant number of queries whatever their number."""
    ids = [r.id for r in recipients]
    channels: list[str] = list(notification.channels)
    category = notification.category
    tenant_settings = notification.tenant.settings or {}
    preferences = PreferenceIndex(
        Preference.objects.filter(
            Q(recipient__any=ids) | Q(recipient__isnull=True), tenant_id=notification.tenant_id
        ).filter(Q(category_id=category.pk) | Q(category__isnull=True)),
        category.pk,
    )
    with_devices: set[int] = set()
    if Channel.PUSH in channels:
        with_devices = set(
            Device.objects.filter(recipient__any=ids, active=True)
            .order_by()
            .values_list("recipient_id", flat=True)
            .distinct()
        )
    # Only the in-app channel can complete inside fan-out: its adapter writes nothing outside
    # this transaction. (Asking the resolver about external channels here would cost queries.)
    inline = {}
    shared = set()
    if Channel.IN_APP in channels:
        first = registry.provider_for_attempt(registry.chain_for(Channel.IN_APP, notification.tenant), 1)
        if registry.adapter_flag(first, "inline", False):
            inline[Channel.IN_APP.value] = first
            # Rows PostgreSQL can build alone: every message accepted, its id the delivery's.
            if (
                connection.vendor == "postgresql"
                and Channel.IN_APP not in INTERRUPTING_CHANNELS  # see _decide_shared
                and len(recipients) >= conf.get().FANOUT_SHARED_ROWS_MIN  # else one COPY for all rows
                and registry.adapter_flag(first, "accepts_all", False)
                and getattr(type(first), "message_id_for", None) is InAppAdapter.message_id_for
            ):
                shared.add(Channel.IN_APP.value)
    return ChunkContext(
        notification=notification,
        now=now,
        recipients=recipients,
        preferences=preferences,
        with_devices=with_devices,
        duplicates=_duplicates(notification, ids, now) if notification.dedup_key else set(),
        listed=suppressed_pairs(tenant_id=notification.tenant_id, channels=channels, recipients=recipients),
        defaults=_default_destinations(notification, channels, recipients),
        inline=inline,
        renderer=NotificationRenderer(notification, default_locale=str(tenant_settings.get("default_locale", ""))),
        policy=retry_policy_for(tenant_settings),
        critical=bool(category.critical),
        shared=shared,
    )


def suppression_reason(context: ChunkContext, recipient: Any, preference: EffectivePreference, channel: str) -> str:
    """Why this (recipient, channel) gets no message, in the module docstring's order, or ""."""
    if (recipient.id, channel) in context.duplicates:
        return Reason.DUPLICATE
    if not context.critical and recipient.unsubscribed_at is not None:
        return Reason.UNSUBSCRIBED
    if not context.critical and not preference.channel_enabled(channel):
        return Reason.OPTED_OUT
    if not _has_address(channel, recipient, context.with_devices, context.defaults):
        return Reason.NO_ADDRESS
    if (recipient.id, channel) in context.listed:  # bounced, STOP, 410: even critical ones would fail
        return Reason.SUPPRESSED_ADDRESS
    return ""


def _quiet_hours_end(preference: EffectivePreference, recipient: Any, now: datetime) -> datetime | None:
    """When the recipient's quiet hours end, if `now` is inside them."""
    if not preference.has_quiet_hours:
        return None
    assert preference.quiet_hours_start and preference.quiet_hours_end
    return quiet_hours_until(
        now=now, tz=zone(recipient.timezone), start=preference.quiet_hours_start, end=preference.quiet_hours_end
    )


def _no_quiet_hours() -> datetime | None:
    return None


def delivery_decide(
    context: ChunkContext,
    recipient: Any,
    preference: EffectivePreference,
    channel: str,
    quiet_until: Callable[[], datetime | None],
) -> dict[str, Any]:
    """The fields of one (recipient, channel)'s row (see the module docstring). An inline channel's
    row gets only `rendered`: its status is the inline adapter's answer, in this transaction.
    `quiet_until` is asked only for a row that quiet hours could defer."""
    reason = suppression_reason(context, recipient, preference, channel)
    if reason:
        return {"status": Status.SUPPRESSED, "suppression_reason": reason}
    if not context.critical and channel in INTERRUPTING_CHANNELS:
        if preference.digest != Digest.IMMEDIATE or context.notification.digest:
            return {"status": Status.DIGEST}
        until = quiet_until()
        if until is not None:
            return {"status": Status.DEFERRED, "next_attempt_at": until}
    if channel in context.inline:
        try:
            content = context.renderer.render(channel, recipient)
        except RenderError as exc:
            return {
                "status": Status.FAILED,
                "failed_at": context.now,
                "error_code": "render_error",
                "last_error": str(exc),
            }
        return {"rendered": {"to": registry.address_for(channel, recipient), **content}}
    return {"status": Status.QUEUED, "queued_at": context.now}


def chunk_decide(context: ChunkContext) -> ChunkDecisions:
    """One new row per (recipient, channel) of the chunk, each decided by `delivery_decide`."""
    notification, now = context.notification, context.now
    decisions = ChunkDecisions()
    base = {
        "tenant_id": notification.tenant_id,
        "notification_id": notification.pk,
        "template_version_id": notification.template_version_id,
        "dedup_key": notification.dedup_key or None,
        "created_at": now,
    }
    decisions.base = base
    shared = context.shared
    ids = iter(uuid7_many(len(context.recipients) * len(notification.channels)))
    for recipient in context.recipients:
        preference = context.preferences.for_recipient(recipient.id)
        quiet_until = (  # asked once per recipient, and only if it has quiet hours
            cache(partial(_quiet_hours_end, preference, recipient, now))
            if preference.has_quiet_hours
            else _no_quiet_hours
        )
        for channel in notification.channels:
            delivery_id = next(ids)
            if channel in shared and _decide_shared(context, decisions, recipient, preference, channel, delivery_id):
                continue
            fields = delivery_decide(context, recipient, preference, channel, quiet_until)
            row: Row = {**base, "id": delivery_id, "recipient_id": recipient.id, "channel": channel}
            decisions.rows.append(row)
            if "status" not in fields:
                decisions.inline[channel].append((row, fields["rendered"]))
                continue
            row.update(fields)
            if fields["status"] == Status.SUPPRESSED:
                decisions.suppressed[(channel, fields["suppression_reason"])] += 1
            elif fields["status"] == Status.DIGEST:
                decisions.digests.append(row)
    return decisions


def _decide_shared(
    context: ChunkContext,
    decisions: ChunkDecisions,
    recipient: Any,
    preference: EffectivePreference,
    channel: str,
    delivery_id: Any,
) -> bool:
    """`delivery_decide` for a row of a shared channel (inline, never interrupting, so neither digest
    nor quiet hours apply): a row it would render inline goes to the chunk's SharedRows, without a
    rendering dict of its own. False for any other outcome (suppressed, a render error), which
    `delivery_decide` then decides as for any row."""
    if suppression_reason(context, recipient, preference, channel):
        return False
    try:
        content = context.renderer.render(channel, recipient)
    except RenderError:
        return False
    return decisions.shared[channel].add(delivery_id, recipient.id, registry.address_for(channel, recipient), content)


def chunk_write(context: ChunkContext, decisions: ChunkDecisions, audience: Audience) -> set[Any]:
    """Sends the inline rows, inserts every row (returns the ids that went in), publishes the
    inbox's, announces their statuses and hands the digest rows to their windows."""
    notification, now = context.notification, context.now
    for channel, items in decisions.inline.items():
        _send_inline(notification, context.inline[channel], items, context.policy, now)
    rows = decisions.rows
    # A chunk commits all its rows or none, so a chunk not marked done has none yet: nothing is
    # looked up beforehand (that lookup grew with the notification), and the unique constraint
    # (ON CONFLICT DO NOTHING ... RETURNING) says which rows went in.
    inserted = deliveries_insert(rows)
    new = rows if len(inserted) == len(rows) else [r for r in rows if r["id"] in inserted]  # usually all
    inbox = [(r["id"], r["recipient_id"]) for r in new if r["channel"] in context.inline]
    outcomes = [(row["tenant_id"], row["id"], row["status"]) for row in new]
    for channel, shared in decisions.shared.items():
        if not shared.ids:
            continue
        adapter = context.inline[channel]
        shared.fields = _accepted_fields(adapter, context.policy, now)
        went_in = deliveries_insert_shared(  # None: every row went in
            {**decisions.base, "channel": channel, **shared.fields},
            shared.ids,
            shared.recipient_ids,
            shared.addresses,
            shared.parts,
            shared.tails,
        )
        pairs = zip(shared.ids, shared.recipient_ids, strict=True)
        ids = shared.ids if went_in is None else [i for i in shared.ids if i in went_in]
        inserted.update(ids)
        inbox.extend(pairs if went_in is None else ((i, r) for i, r in pairs if i in went_in))
        status = shared.fields["status"]
        outcomes.extend((notification.tenant_id, i, status) for i in ids)
        _inline_metrics(notification, channel, adapter, Counter({status: len(shared.ids)}), now)
    inbox_publish(inbox, tenant_id=notification.tenant_id)
    deliveries_announce(outcomes, audience)
    digest_enqueue(
        deliveries=[row for row in decisions.digests if row["id"] in inserted],
        category_id=notification.category.pk,
        preferences=context.preferences,
        now=now,
        notification=notification,
        recipients=context.recipients,
    )
    return inserted


def chunk_count(decisions: ChunkDecisions, inserted: set[Any], result: ChunkResult) -> None:
    """Counts the suppressed rows in the metrics, and the inserted rows (and queued ids per
    channel, for the send batches) in the chunk's result."""
    for (channel, reason), count in decisions.suppressed.items():
        metrics.SUPPRESSED.labels(channel=channel, reason=reason).inc(count)
    rows = decisions.rows
    partial = len(inserted) != len(rows) + sum(len(s.ids) for s in decisions.shared.values())
    if partial:  # a re-run: some rows were there already
        rows = [row for row in rows if row["id"] in inserted]
    result.statuses.update(row["status"] for row in rows)
    for row in rows:
        if row["status"] == Status.QUEUED:
            result.queued.setdefault(row["channel"], []).append(str(row["id"]))
    for channel, columns in decisions.shared.items():
        ids = [i for i in columns.ids if i in inserted] if partial else columns.ids
        if ids:
            result.statuses[columns.fields["status"]] += len(ids)
            if columns.fields["status"] == Status.QUEUED:
                result.queued.setdefault(channel, []).extend(str(i) for i in ids)


def _expand(
    notification: Notification, chunk: FanoutChunk, now: datetime, result: ChunkResult, audience: Audience
) -> None:
    """Expands one chunk: load → decide → write → count."""
    recipients = _chunk_recipients(notification, chunk)
    result.recipients = len(recipients)
    if not recipients:
        return
    context = chunk_context(notification, recipients, now)
    decisions = chunk_decide(context)
    inserted = chunk_write(context, decisions, audience)
    chunk_count(decisions, inserted, result)


def _send_inline(
    notification: Notification,
    adapter: Any,
    items: list[tuple[Row, dict[str, Any]]],
    policy: Any,
    now: datetime,
) -> None:
    """Calls an inline adapter (no side effect outside this transaction) for a chunk's rows. One
    that accepts every message (`accepts_all`, the inbox) is not called: the outcome of its answer
    is worked out once and written on every row, with its message id and the encoded rendering."""
    if registry.adapter_flag(adapter, "accepts_all", False):
        outcomes = _accept_inline(adapter, items, policy, now)
    else:
        outcomes = _call_inline(notification, adapter, items, policy, now)
    _inline_metrics(notification, items[0][0]["channel"], adapter, outcomes, now)


def _inline_metrics(
    notification: Notification, channel: str, adapter: Any, outcomes: Counter[str], now: datetime
) -> None:
    """Counts an inline channel's outcomes and the latency of the accepted ones."""
    for status, count in outcomes.items():
        if status in (Status.DELIVERED, Status.SENT, Status.FAILED, Status.DEAD):
            metrics.DELIVERIES.labels(channel=channel, provider=adapter.name, status=status).inc(count)
    accepted = outcomes[Status.DELIVERED] + outcomes[Status.SENT]
    if accepted:
        latency = max((now - (notification.scheduled_at or notification.created_at)).total_seconds(), 0)
        metrics.observe_many(metrics.DELIVERY_LATENCY.labels(channel=channel), latency, accepted)


def _accepted_fields(adapter: Any, policy: Any, now: datetime) -> dict[str, Any]:
    """The fields of a row an adapter that accepts every message has accepted (its message id aside)."""
    accepted = outcome_fields(
        adapter=adapter, result=SendResult.ok(adapter.name, message_id=""), attempt=1, policy=policy, now=now
    )
    accepted.update(attempts=1, provider=adapter.name)
    return accepted


def _accept_inline(adapter: Any, items: list[tuple[Row, dict[str, Any]]], policy: Any, now: datetime) -> Counter[str]:
    accepted = _accepted_fields(adapter, policy, now)
    encode = _RenderedJson()
    for row, rendered in items:
        row.update(accepted)
        row["provider_message_id"] = adapter.message_id_for(str(row["id"]))[:255]
        row["rendered"] = encode(rendered)
    return Counter({accepted["status"]: len(items)})


class _RenderedJson:
    """Encodes inline rows' `rendered` (`{"to", "locale", "content"}`) for the insert: everything
    after the address is the same for every recipient of a locale (one content object, see
    NotificationRenderer), so it is encoded once and only the address is encoded per row."""

    def __init__(self) -> None:
        # id(content) -> (content, locale, the JSON after the address); content kept alive
        self._tails: dict[int, tuple[Any, Any, str]] = {}

    def __call__(self, rendered: dict[str, Any]) -> JsonText:
        if rendered.keys() != {"to", "locale", "content"}:
            return JsonText(json.dumps(rendered))
        content, locale = rendered["content"], rendered["locale"]
        known = self._tails.get(id(content))
        if known is None or known[0] is not content or known[1] != locale:
            tail = f', "locale": {json.dumps(locale)}, "content": {json.dumps(content)}}}'
            known = self._tails[id(content)] = (content, locale, tail)
        return JsonText(f'{{"to": {json.dumps(rendered["to"])}{known[2]}')


def _call_inline(
    notification: Notification, adapter: Any, items: list[tuple[Row, dict[str, Any]]], policy: Any, now: datetime
) -> Counter[str]:
    messages = [
        registry.message_build(
            delivery_id=str(row["id"]),
            tenant_id=str(row["tenant_id"]),
            channel=row["channel"],
            to=rendered["to"],
            rendered=rendered,
            metadata=message_metadata(notification, delivery_id=str(row["id"]), attempt=1),
        )
        for row, rendered in items
    ]
    batch = getattr(adapter, "send_batch", None)
    results = list(batch(messages)) if callable(batch) else [adapter.send(m) for m in messages]
    outcomes: Counter[str] = Counter()
    for (row, rendered), sent in zip(items, results, strict=True):
        row.update(outcome_fields(adapter=adapter, result=sent, attempt=1, policy=policy, now=now))
        row.update(attempts=1, provider=adapter.name, rendered=rendered)
        outcomes[row["status"]] += 1
    return outcomes


def deliveries_create_for(
    *,
    notification: Notification,
    recipient_ids: Sequence[int],
    channels: Sequence[str],
    digest: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> ChunkResult:
    """Creates this notification's deliveries for these recipients on these channels, deciding each
    one as a fan-out chunk does (preferences, unsubscribes, suppression list, quiet hours, digests,
    the in-app inbox inline), and publishes their sends on commit.

    For callers that reach an audience step by step (apps.flows). Run it inside a transaction.
    Idempotent: an existing (notification, recipient, channel) is left as it is and not counted.
    `digest` (`{"key", "window_minutes"}`, resolved) sends these deliveries to digest windows.
    """
    now = now or timezone.now()
    view = copy.copy(notification)  # the same intent, narrowed to this audience and these channels
    view.recipient_ids, view.channels, view.topic_id = list(recipient_ids), list(channels), None
    if digest is not None:
        view.digest = dict(digest)
    result = ChunkResult(chunk_id=0)
    _expand(
        view, FanoutChunk(notification=view, index=0, start=0, end=len(view.recipient_ids)), now, result, Audience()
    )
    size, queue = conf.get().SEND_BATCH_SIZE, queue_for(notification.priority)
    for ids in result.queued.values():
        for start in range(0, len(ids), size):
            publish_on_commit(
                "signalbox.notifications.send_batch", ids[start : start + size], [str(notification.pk)], queue=queue
            )
    return result


def fanout_chunk_run(*, chunk_id: int, now: datetime | None = None) -> ChunkResult | None:
    """Expands one chunk into deliveries (see the module docstring); None if it is done, dead or busy.

    Each run is counted before its work (`_attempt_start`), so a chunk that fails every time, or
    whose worker is killed every time (a template past the time limit), ends `dead` after
    FANOUT_CHUNK_MAX_ATTEMPTS runs instead of holding a worker process forever; its notification
    then ends `failed` with the reason once its other chunks are settled.
    """
    now = now or timezone.now()
    attempt = _attempt_start(chunk_id)
    if attempt is None:
        return None
    max_attempts = conf.get().FANOUT_CHUNK_MAX_ATTEMPTS
    if attempt > max_attempts:  # the previous runs never finished (killed, or past the time limit)
        _chunk_dead(chunk_id, now, error="", attempts=max_attempts)
        return None
    try:
        return _chunk_run(chunk_id, now)
    except Exception as exc:  # recorded; then retried by the sweeper, or dead
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if attempt >= max_attempts:
            log.exception("fan-out chunk dead", extra={"chunk_id": chunk_id, "attempts": attempt})
            _chunk_dead(chunk_id, now, error=error, attempts=attempt)
            return None
        FanoutChunk.objects.filter(pk=chunk_id).update(last_error=error)
        raise


def _attempt_start(chunk_id: int) -> int | None:
    """Counts a run of the chunk in one statement of its own (committed before the work), so a run
    whose worker dies still counts. None when the chunk is done, dead, or being run right now."""
    table = FanoutChunk._meta.db_table
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET attempts = attempts + 1 WHERE id = (SELECT id FROM {table} "  # noqa: S608
            f"WHERE id = %s AND done_at IS NULL AND dead_at IS NULL{lock}) RETURNING attempts",
            [chunk_id],
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _chunk_dead(chunk_id: int, now: datetime, *, error: str, attempts: int) -> None:
    """Marks the chunk dead with its reason and, if it was the last one open, ends its notification."""
    with transaction.atomic():
        chunk = (
            FanoutChunk.objects.select_for_update(of=("self",))
            .filter(pk=chunk_id, done_at__isnull=True, dead_at__isnull=True)
            .select_related("notification")
            .order_by()
            .first()
        )
        if chunk is None:
            return
        reason = error or chunk.last_error or "its worker stopped before it finished (killed, or past the time limit)"
        FanoutChunk.objects.filter(pk=chunk_id).update(dead_at=now, last_error=f"{reason} (after {attempts} attempts)")
        notification_lock(chunk.notification_id)
        _mark_dispatched_if_last(chunk.notification, now)
    metrics.DEAD_LETTERS.labels(kind="fanout_chunk", channel="").inc()
    log.error("fan-out chunk dead", extra={"chunk_id": chunk_id, "attempts": attempts, "error": reason})


def notification_fanout_settle(*, notification_id: Any, now: datetime | None = None) -> None:
    """For the sweeper: a notification whose chunks are all done or dead, but that no chunk moved on."""
    now = now or timezone.now()
    with transaction.atomic():
        notification_lock(notification_id)
        notification = Notification.objects.filter(pk=notification_id).first()
        if notification is not None:
            _mark_dispatched_if_last(notification, now)


def fanout_chunks_replay(*, notification: Notification, now: datetime | None = None) -> int:
    """Gives a `failed` notification's dead chunks a fresh run budget and publishes them again (the
    template fixed, a bad recipient removed); the notification is `fanning_out` again. Returns how
    many chunks were replayed (0 when none is dead)."""
    now = now or timezone.now()
    with transaction.atomic():
        notification_lock(notification.pk)
        ids = list(
            FanoutChunk.objects.select_for_update()
            .filter(notification_id=notification.pk, dead_at__isnull=False)
            .values_list("pk", flat=True)
        )
        if not ids:
            return 0
        FanoutChunk.objects.filter(pk__in=ids).update(dead_at=None, attempts=0, last_error="", published_at=now)
        Notification.objects.filter(pk=notification.pk, status=Notification.Status.FAILED).update(
            status=Notification.Status.FANNING_OUT, error="", updated_at=now
        )
        for chunk_id in ids:
            publish_on_commit("signalbox.notifications.fan_out_chunk", chunk_id, queue=queue_for(notification.priority))
    return len(ids)


def _chunk_run(chunk_id: int, now: datetime) -> ChunkResult | None:
    result = ChunkResult(chunk_id=chunk_id)
    send_batch_size = conf.get().SEND_BATCH_SIZE
    audience = Audience()  # who listens to delivery events, asked once for the chunk
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A chunk's rows and its done mark commit together, and a chunk not marked done is run
            # again by the sweeper: losing this commit in a database crash costs a re-run, never
            # data or a double send. So it need not wait for its WAL flush (the send path does).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        # `of=self` and no ordering: the lock must cover this chunk row only, never the notification.
        chunk = (
            FanoutChunk.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk=chunk_id, done_at__isnull=True)
            .order_by()
            .first()
        )
        if chunk is None:
            return None
        notification = Notification.objects.select_related("tenant", "category", "template", "template_version").get(
            pk=chunk.notification_id
        )
        if notification.status != Notification.Status.FANNING_OUT:
            result.cancelled = True
        else:
            try:
                with transaction.atomic():
                    _expand(notification, chunk, now, result, audience)
                    # Serializes with notification_cancel: either the cancel sees these rows
                    # (it runs after this commit), or this chunk sees the cancel and undoes itself.
                    notification_lock(notification.pk)
                    status = Notification.objects.filter(pk=notification.pk).values_list("status", flat=True).get()
                    if status == Notification.Status.CANCELLED:
                        raise _Cancelled
            except _Cancelled:
                result = ChunkResult(chunk_id=chunk_id, cancelled=True)
        FanoutChunk.objects.filter(pk=chunk.pk).update(done_at=now, delivery_count=sum(result.statuses.values()))
        if not result.cancelled:
            _mark_dispatched_if_last(notification, now)
            queue = queue_for(notification.priority)
            for ids in result.queued.values():
                for start in range(0, len(ids), send_batch_size):
                    publish_on_commit(
                        "signalbox.notifications.send_batch",
                        ids[start : start + send_batch_size],
                        [str(notification.pk)],
                        queue=queue,
                    )
    if not result.cancelled:
        notification_complete_if_settled(
            notification_id=notification.pk, tenant_id=notification.tenant_id, audience=audience
        )
    return result


def _mark_dispatched_if_last(notification: Notification, now: datetime) -> None:
    """Runs under the notification lock, so of two chunks finishing together the later one sees
    the other done. With every chunk settled: `dispatched`, or `failed` when a chunk is dead (its
    recipients got no delivery; those of the other chunks are still sent), `error` saying why."""
    chunks = FanoutChunk.objects.filter(notification_id=notification.pk)
    settled = chunks.aggregate(
        open=Count("pk", filter=Q(done_at__isnull=True, dead_at__isnull=True)),
        dead=Count("pk", filter=Q(dead_at__isnull=False)),
    )
    if settled["open"]:
        return
    if not settled["dead"]:
        Notification.objects.filter(pk=notification.pk, status=Notification.Status.FANNING_OUT).update(
            status=Notification.Status.DISPATCHED, dispatched_at=now, updated_at=now
        )
        return
    dead = list(chunks.filter(dead_at__isnull=False).order_by("index").values_list("index", "last_error")[:1])
    index, error = dead[0]
    Notification.objects.filter(pk=notification.pk, status=Notification.Status.FANNING_OUT).update(
        status=Notification.Status.FAILED,
        error=(
            f"{settled['dead']} of {notification.chunks_total or chunks.count()} fan-out chunks are dead: their "
            f"recipients got no delivery (replay them once fixed). Chunk {index}: {error[:1000]}"
        ),
        updated_at=now,
    )
