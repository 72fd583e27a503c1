"""The in-app inbox: read, unread, seen and archived state, and the recipient tokens browsers use.

An inbox item is an in-app Delivery in status `delivered` or `read`. `read_at` is the inbox
flag (it can be cleared by "mark unread"); the status records that it was read at least once.

A browser or app never holds the tenant's API key: the tenant's back end mints a short-lived
recipient token (`inbox_token_mint`) signed with SECRET_KEY, which only opens that recipient's
inbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core import signing
from django.db.models import Case, F, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.core.errors import ApplicationError
from apps.notifications import conf
from apps.notifications.models import Delivery, Recipient
from apps.observability import metrics
from apps.providers.base import Channel

TOKEN_SALT = "signalbox.notifications.inbox-token"  # noqa: S105 (a signing namespace, not a secret)


class InvalidToken(Exception):
    pass


def inbox_token_mint(*, recipient: Recipient, ttl_seconds: int | None = None) -> tuple[str, datetime]:
    """A signed token for this recipient's inbox; returns (token, expires_at)."""
    settings = conf.get()
    ttl = int(ttl_seconds or settings.INBOX_TOKEN_TTL_SECONDS)
    if not 60 <= ttl <= settings.INBOX_TOKEN_MAX_TTL_SECONDS:
        raise ApplicationError(
            "Invalid token lifetime.",
            code="validation_error",
            fields={"ttl_seconds": [f"Between 60 and {settings.INBOX_TOKEN_MAX_TTL_SECONDS} seconds."]},
        )
    expires_at = timezone.now() + timedelta(seconds=ttl)
    token = signing.dumps(
        {"t": str(recipient.tenant_id), "r": recipient.pk, "x": int(expires_at.timestamp())}, salt=TOKEN_SALT
    )
    return token, expires_at


def inbox_token_read(token: str) -> tuple[str, int]:
    """(tenant id, recipient pk) of a valid, unexpired token; raises InvalidToken."""
    try:
        data = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature as exc:
        raise InvalidToken("The recipient token is invalid.") from exc
    if not isinstance(data, dict) or not {"t", "r", "x"} <= set(data):
        raise InvalidToken("The recipient token is invalid.")
    if int(data["x"]) < timezone.now().timestamp():
        raise InvalidToken("The recipient token has expired.")
    return str(data["t"]), int(data["r"])


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


def inbox_mark_read(*, recipient: Recipient, ids: Sequence[Any] | None = None) -> int:
    """Marks items (or all, with ids=None) read; the first read moves `delivered` to `read`."""
    now = timezone.now()
    first_reads = _targets(recipient, ids).filter(status=Delivery.Status.DELIVERED).count()
    updated = (
        _targets(recipient, ids)
        .filter(read_at__isnull=True)
        .update(
            read_at=now,
            seen_at=Coalesce(F("seen_at"), now),
            status=Case(When(status=Delivery.Status.DELIVERED, then=Value(Delivery.Status.READ)), default=F("status")),
        )
    )
    if first_reads:
        metrics.DELIVERIES.labels(channel=Channel.IN_APP, provider="in_app", status="read").inc(first_reads)
    return updated


def inbox_mark_unread(*, recipient: Recipient, ids: Sequence[Any]) -> int:
    return _targets(recipient, ids).filter(read_at__isnull=False).update(read_at=None)


def inbox_mark_seen(*, recipient: Recipient, ids: Sequence[Any] | None = None) -> int:
    return _targets(recipient, ids).filter(seen_at__isnull=True).update(seen_at=timezone.now())


def inbox_archive(*, recipient: Recipient, ids: Sequence[Any]) -> int:
    return _targets(recipient, ids).filter(archived_at__isnull=True).update(archived_at=timezone.now())


def inbox_unarchive(*, recipient: Recipient, ids: Sequence[Any]) -> int:
    return _targets(recipient, ids).filter(archived_at__isnull=False).update(archived_at=None)


def inbox_counts(*, recipient: Recipient) -> dict[str, int]:
    live = inbox_queryset(recipient=recipient).filter(archived_at__isnull=True)
    return {
        "unread": live.filter(read_at__isnull=True).count(),
        "unseen": live.filter(seen_at__isnull=True).count(),
    }
