"""The in-app inbox: read, unread, seen and archived state, and the recipient tokens browsers use.

An inbox item is an in-app Delivery in status `delivered` or `read`. `read_at` is the inbox
flag (it can be cleared by "mark unread"); the status records that it was read at least once.

A browser or app never holds the tenant's API key: the tenant's back end mints a short-lived
recipient token (`inbox_token_mint`) signed with SECRET_KEY, which only opens that recipient's
inbox. A token names the API key that minted it and the recipient's token generation: it stops
working as soon as that key is revoked or expires, or the tenant revokes the recipient's tokens
(`inbox_tokens_revoke`, one increment of the generation), not when it would have expired.

Live streams (docs/realtime.md): every new item and every state change takes a fresh
`change_seq` in its own transaction and is published after commit to `inbox.<recipient pk>`
(only when someone listens); `inbox_changes_since` replays what a reconnecting stream missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core import signing
from django.db import connection, transaction
from django.db.models import Case, Count, F, Max, Q, QuerySet, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError
from apps.core.live import live_publish_to_listeners
from apps.notifications import conf, hooks
from apps.notifications.models import Delivery, NextChangeSeq, Recipient
from apps.notifications.serializers import InboxItemSerializer
from apps.observability import metrics
from apps.observability.audit import audit_record
from apps.providers.base import Channel

TOKEN_SALT = "signalbox.notifications.inbox-token"  # noqa: S105 (a signing namespace, not a secret)


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says; authentication checks the key and the generation against the database."""

    tenant_id: str
    recipient_pk: int
    key_prefix: str
    generation: int


def inbox_token_mint(*, recipient: Recipient, key_prefix: str, ttl_seconds: int | None = None) -> tuple[str, datetime]:
    """A signed token for this recipient's inbox, minted by the API key `key_prefix`; (token, expires_at)."""
    settings = conf.get()
    ttl = int(ttl_seconds or settings.INBOX_TOKEN_TTL_SECONDS)
    if not 60 <= ttl <= settings.INBOX_TOKEN_MAX_TTL_SECONDS:
        raise ApplicationError(
            "Invalid token lifetime.",
            code="validation_error",
            fields={"ttl_seconds": [f"Between 60 and {settings.INBOX_TOKEN_MAX_TTL_SECONDS} seconds."]},
        )
    expires_at = timezone.now() + timedelta(seconds=ttl)
    generation = Recipient.objects.filter(pk=recipient.pk).values_list("inbox_token_generation", flat=True).get()
    token = signing.dumps(
        {
            "t": str(recipient.tenant_id),
            "r": recipient.pk,
            "x": int(expires_at.timestamp()),
            "k": key_prefix,
            "g": generation,
        },
        salt=TOKEN_SALT,
    )
    return token, expires_at


def inbox_token_read(token: str) -> TokenClaims:
    """The claims of a validly signed, unexpired token; raises InvalidToken.

    Tokens minted before tokens named their key (no `k`) are refused: they could not be revoked.
    """
    try:
        data = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature as exc:
        raise InvalidToken("The recipient token is invalid.") from exc
    if not isinstance(data, dict) or not {"t", "r", "x", "k", "g"} <= set(data):
        raise InvalidToken("The recipient token is invalid.")
    if int(data["x"]) < timezone.now().timestamp():
        raise InvalidToken("The recipient token has expired.")
    return TokenClaims(str(data["t"]), int(data["r"]), str(data["k"]), int(data["g"]))


def inbox_token_expiry(token: str) -> int:
    """When a validly signed token expires (a Unix time): a long-lived stream ends on it."""
    return int(signing.loads(token, salt=TOKEN_SALT)["x"])


def inbox_tokens_revoke(*, recipient: Recipient, actor: Actor = SYSTEM) -> None:
    """Ends every inbox token of this recipient minted so far, at once (tokens minted later work)."""
    with transaction.atomic():
        Recipient.objects.filter(pk=recipient.pk).update(inbox_token_generation=F("inbox_token_generation") + 1)
        audit_record(action="recipient.inbox_tokens_revoked", tenant=recipient.tenant, actor=actor, target=recipient)


def inbox_queryset(*, recipient: Recipient) -> QuerySet[Delivery]:
    return Delivery.objects.filter(
        tenant_id=recipient.tenant_id,
        recipient=recipient,
        channel=Channel.IN_APP,
        status__in=Delivery.INBOX_VISIBLE,
    )


def _targets(recipient: Recipient, ids: Sequence[Any] | None) -> QuerySet[Delivery]:
    qs = inbox_queryset(recipient=recipient)
    return qs if ids is None else qs.filter(pk__in=ids)


def _change(recipient: Recipient, targets: QuerySet[Delivery], **fields: Any) -> int:
    """One inbox state change: new `change_seq` per row, published to live streams after commit."""
    with transaction.atomic():
        ids = list(targets.values_list("pk", flat=True))
        if not ids:
            return 0
        updated = targets.filter(pk__in=ids).update(**fields, change_seq=next_change_seq())
        inbox_publish((pk, recipient.pk) for pk in ids)
        hooks.inbox_changed(ids)
    return updated


def inbox_mark_read(*, recipient: Recipient, ids: Sequence[Any] | None = None) -> int:
    """Marks items (or all, with ids=None) read; the first read moves `delivered` to `read`."""
    now = timezone.now()
    first_reads = _targets(recipient, ids).filter(status=Delivery.Status.DELIVERED).count()
    updated = _change(
        recipient,
        _targets(recipient, ids).filter(read_at__isnull=True),
        read_at=now,
        seen_at=Coalesce(F("seen_at"), now),
        status=Case(When(status=Delivery.Status.DELIVERED, then=Value(Delivery.Status.READ)), default=F("status")),
    )
    if first_reads:
        metrics.DELIVERIES.labels(channel=Channel.IN_APP, provider="in_app", status="read").inc(first_reads)
    return updated


def inbox_mark_unread(*, recipient: Recipient, ids: Sequence[Any]) -> int:
    return _change(recipient, _targets(recipient, ids).filter(read_at__isnull=False), read_at=None)


def inbox_mark_seen(*, recipient: Recipient, ids: Sequence[Any] | None = None) -> int:
    return _change(recipient, _targets(recipient, ids).filter(seen_at__isnull=True), seen_at=timezone.now())


def inbox_archive(*, recipient: Recipient, ids: Sequence[Any]) -> int:
    return _change(recipient, _targets(recipient, ids).filter(archived_at__isnull=True), archived_at=timezone.now())


def inbox_unarchive(*, recipient: Recipient, ids: Sequence[Any]) -> int:
    return _change(recipient, _targets(recipient, ids).filter(archived_at__isnull=False), archived_at=None)


def inbox_counts(*, recipient: Recipient) -> dict[str, int]:
    """Unread and unseen items not archived (one query)."""
    live = Q(status__in=Delivery.INBOX_VISIBLE, archived_at__isnull=True)
    return inbox_queryset(recipient=recipient).aggregate(
        unread=Count("pk", filter=live & Q(read_at__isnull=True)),
        unseen=Count("pk", filter=live & Q(seen_at__isnull=True)),
    )


def inbox_counts_many(recipients: Iterable[tuple[Any, Any]]) -> dict[Any, dict[str, int]]:
    """`inbox_counts` of many recipients, `(recipient_pk, tenant_id)` pairs, in one grouped query:
    the realtime process asks for all its streams whose inbox changed at once."""
    pairs = list(recipients)
    if not pairs:
        return {}
    live = Q(status__in=Delivery.INBOX_VISIBLE, archived_at__isnull=True)
    rows = (
        Delivery.objects.filter(
            tenant_id__in={tenant_id for _, tenant_id in pairs},
            recipient_id__in=[pk for pk, _ in pairs],
            channel=Channel.IN_APP,
            status__in=Delivery.INBOX_VISIBLE,
        )
        .values("recipient_id")
        .annotate(
            unread=Count("pk", filter=live & Q(read_at__isnull=True)),
            unseen=Count("pk", filter=live & Q(seen_at__isnull=True)),
        )
        .order_by()
    )
    found = {row["recipient_id"]: {"unread": row["unread"], "unseen": row["unseen"]} for row in rows}
    return {pk: found.get(pk, {"unread": 0, "unseen": 0}) for pk, _ in pairs}


# --- Live streams --------------------------------------------------------------------------------


def next_change_seq() -> Any:
    """The next cursor value, for an UPDATE (SQLite, for `make run`: one past the largest)."""
    if connection.vendor == "postgresql":
        return NextChangeSeq()
    return RawSQL("(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM notifications_delivery)", [])


def inbox_group(recipient_pk: Any) -> str:
    return f"inbox.{recipient_pk}"


def inbox_messages(deliveries: Iterable[Delivery]) -> list[dict[str, Any]]:
    """`{"type": "inbox.item", "id": change_seq, "data": <the REST inbox item>}`, one per row."""
    rows = list(deliveries)
    serializer: Any = InboxItemSerializer(rows, many=True)  # the REST shape, exactly; `data` shadows .data
    items = list(serializer.data)
    return [{"type": "inbox.item", "id": row.change_seq, "data": item} for row, item in zip(rows, items, strict=True)]


def inboxes_tenant_group(tenant_id: Any) -> str:
    """Listened (never sent to) while any inbox stream of the tenant is open: lets a fan-out chunk
    skip asking about each of its recipients' inboxes when nobody in the tenant has one open."""
    return f"inboxes.{tenant_id}"


def inbox_publish(items: Iterable[tuple[Any, Any]], *, tenant_id: Any = None) -> None:
    """Publishes `(delivery id, recipient pk)` inbox rows to their recipients' live streams once the
    transaction commits. Who listens is asked after the commit, and only the rows of recipients
    someone listens to are read then (their committed state and cursor): nobody listening, nothing
    read. With the rows' `tenant_id` (all of one tenant), the tenant's marker is asked first.
    Call inside the writing transaction."""
    by_recipient: dict[str, list[Any]] = {}
    for delivery_id, recipient_pk in items:
        by_recipient.setdefault(inbox_group(recipient_pk), []).append(delivery_id)

    def build(listening: set[str]) -> list[tuple[str, dict[str, Any]]]:
        ids = [pk for group in listening for pk in by_recipient[group]]
        rows = Delivery.objects.filter(pk__in=ids, channel=Channel.IN_APP, status__in=Delivery.INBOX_VISIBLE).order_by(
            "change_seq"
        )
        recipients = [row.recipient_id for row in rows]
        messages = inbox_messages(rows)
        return [(inbox_group(r), m) for r, m in zip(recipients, messages, strict=True) if m["id"] is not None]

    live_publish_to_listeners(by_recipient, build, gate=None if tenant_id is None else inboxes_tenant_group(tenant_id))


def inbox_delivered(items: Iterable[tuple[Any, Any]]) -> int:
    """In-app `(delivery id, recipient pk)` rows the sender (not the fan-out) has just made visible:
    each takes a new cursor, so a stream resuming past the row's insert still replays it, and is
    published after commit. Call inside the transaction that recorded them."""
    rows = list(items)
    if not rows:
        return 0
    Delivery.objects.filter(
        pk__in=[pk for pk, _ in rows], channel=Channel.IN_APP, status__in=Delivery.INBOX_VISIBLE
    ).update(change_seq=next_change_seq())
    inbox_publish(rows)
    return len(rows)


def inbox_changes_since(*, recipient_pk: Any, cursor: int, limit: int) -> list[dict[str, Any]]:
    """The inbox messages after `cursor`, oldest first (at most `limit`): what a resuming stream missed."""
    rows = Delivery.objects.filter(
        recipient_id=recipient_pk, channel=Channel.IN_APP, change_seq__gt=cursor, status__in=Delivery.INBOX_VISIBLE
    ).order_by("change_seq")[:limit]
    return inbox_messages(rows)


def inbox_stream_start(*, recipient_pk: Any, tenant_id: Any) -> tuple[int, dict[str, int]]:
    """Where a fresh stream starts, in one query: the newest cursor of this recipient's inbox (0 when
    empty) and the counts as of it (`inbox_counts`)."""
    live = Q(status__in=Delivery.INBOX_VISIBLE, archived_at__isnull=True)
    found = Delivery.objects.filter(tenant_id=tenant_id, recipient_id=recipient_pk, channel=Channel.IN_APP).aggregate(
        cursor=Max("change_seq"),
        unread=Count("pk", filter=live & Q(read_at__isnull=True)),
        unseen=Count("pk", filter=live & Q(seen_at__isnull=True)),
    )
    return int(found["cursor"] or 0), {"unread": found["unread"], "unseen": found["unseen"]}


def inbox_cursor_now(*, recipient_pk: Any) -> int:
    """The newest cursor of this recipient's inbox (0 when empty)."""
    latest = (
        Delivery.objects.filter(recipient_id=recipient_pk, channel=Channel.IN_APP, change_seq__isnull=False)
        .order_by("-change_seq")
        .values_list("change_seq", flat=True)
        .first()
    )
    return int(latest or 0)
