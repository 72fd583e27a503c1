"""Digests, the sending half: every due window becomes ONE message for its recipient and channel.

`digests_flush_due` runs on beat (`signalbox.digests.flush_due`, every minute, `digests` queue). It
hands due open windows out in batches to `signalbox.digests.flush_windows` tasks (several
workers share a 09:00 rush) and stamps them `published_at`; a window still open long after
(its task was lost with a worker) is handed out again.

`digest_window_flush` flushes one window in ONE transaction:

1. claim the window: `SELECT … FOR UPDATE` where it is still `open` and due (a second flush of
   the same window waits, then finds it closed and does nothing);
2. take its items: one `UPDATE` moves their deliveries `digest -> sent` (`provider = "digest"`,
   `provider_message_id` = the digest delivery) where they are still `digest`, so an item
   cancelled meanwhile is left out and no item is taken twice;
3. record the digest: a notification of its own (status `dispatched`, idempotency key
   `digest:<window>`) with one delivery, `queued` (or `deferred` to the end of the recipient's
   quiet hours), rendered from a digest template that lists the items;
4. close the window (`sent`, or `empty` when nothing was left) and its items (`flushed_at`).

A worker killed anywhere in there rolls the whole transaction back: the window is open again
with every item, and the next run sends exactly one digest. The send task is published on commit.

Digest templates: the tenant's template `digest-<category>` (when every item is of that
category), else its template `digest`, else the built-in content below. A digest template sees
`items` (at most `SIGNALBOX_DIGESTS["ITEM_LIMIT"]`, oldest first: `title`, `body`, `category`,
`template`, `created_at`, `notification_id`, `payload`), `count` (all items), `more` (those not
listed), `frequency` and `window` (`starts_at`, `ends_at`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.publish import publish_on_commit
from apps.notifications import rendering
from apps.notifications.models import (
    Category,
    Delivery,
    DigestItem,
    DigestWindow,
    Notification,
    Preference,
    Template,
    uuid7,
)
from apps.notifications.services.content import NotificationRenderer
from apps.notifications.services.digest import digest_settings
from apps.notifications.services.notifications import queue_for
from apps.notifications.services.preferences import (
    INTERRUPTING_CHANNELS,
    PreferenceIndex,
    quiet_hours_until,
    zone,
)
from apps.notifications.services.templates import category_get_or_create
from apps.providers.base import Channel

log = logging.getLogger(__name__)

Status = Delivery.Status
DIGEST_QUEUE = "digests"
DIGEST_CATEGORY = "digest"
DIGEST_PROVIDER = "digest"

_LIST_TEXT = "{% for item in items %}- {{ item.title }}\n{% endfor %}{% if more %}and {{ more }} more\n{% endif %}"
_HEADLINE = "{{ count }} new notification{% if count != 1 %}s{% endif %}"
DEFAULT_DIGEST_CONTENT: dict[str, dict[str, Any]] = {
    Channel.EMAIL: {
        "subject": _HEADLINE,
        "text": _LIST_TEXT,
        "html": "<ul>{% for item in items %}<li>{{ item.title }}</li>{% endfor %}</ul>"
        "{% if more %}<p>and {{ more }} more</p>{% endif %}",
    },
    Channel.SMS: {
        "text": "{{ count }} new: {% for item in items %}{{ item.title }}{% if not loop.last %}; {% endif %}"
        "{% endfor %}{% if more %} and {{ more }} more{% endif %}",
    },
    Channel.PUSH: {
        "title": _HEADLINE,
        "body": "{{ items[0].title }}{% if count > 1 %} and {{ count - 1 }} more{% endif %}",
    },
    Channel.CHAT: {"text": _HEADLINE + "\n" + _LIST_TEXT},
    Channel.IN_APP: {"title": _HEADLINE, "body": _LIST_TEXT},
    Channel.WEBHOOK: {"body": {"type": "digest", "count": "{{ count }}"}},
}
# The rendered field that names an item in the list, and the one that describes it.
TITLE_FIELDS = {"email": "subject", "sms": "text", "push": "title", "in_app": "title", "chat": "text"}
BODY_FIELDS = {"email": "text", "push": "body", "in_app": "body"}


# --- Handing out due windows -----------------------------------------------------------------------


def digests_flush_due(*, now: datetime | None = None) -> dict[str, int]:
    """Publishes flush tasks for due windows (on commit, in batches); returns how many were handed out."""
    now = now or timezone.now()
    cfg = digest_settings()
    stale = now - timedelta(seconds=cfg.republish_after_seconds)
    per_transaction = cfg.flush_batch_size * 10
    handed = 0
    while handed < cfg.flush_max_windows:
        with transaction.atomic():
            ids = [
                str(pk)
                for pk in DigestWindow.objects.select_for_update(skip_locked=True)
                .filter(status=DigestWindow.Status.OPEN, due_at__lte=now)
                .filter(Q(published_at__isnull=True) | Q(published_at__lt=stale))
                .order_by("due_at")
                .values_list("pk", flat=True)[:per_transaction]
            ]
            if ids:
                DigestWindow.objects.filter(pk__in=ids).update(published_at=now)
                for start in range(0, len(ids), cfg.flush_batch_size):
                    publish_on_commit(
                        "signalbox.digests.flush_windows", ids[start : start + cfg.flush_batch_size], queue=DIGEST_QUEUE
                    )
        handed += len(ids)
        if len(ids) < per_transaction:
            break
    return {"windows": handed}


def digest_windows_flush(*, window_ids: Iterable[Any], now: datetime | None = None) -> dict[str, int]:
    """Flushes each window in its own transaction; returns {outcome: count}."""
    counts = {"sent": 0, "empty": 0, "skipped": 0}
    for window_id in window_ids:
        counts[digest_window_flush(window_id=window_id, now=now)] += 1
    return counts


# --- One window ------------------------------------------------------------------------------------


def _take_items(window: DigestWindow, digest_delivery_id: Any, now: datetime) -> list[tuple[Any, Any]]:
    """Moves the window's still-waiting item deliveries to `sent`; returns (delivery id, notification id),
    oldest notification first."""
    deliveries, items = Delivery._meta.db_table, DigestItem._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {deliveries} AS d SET status = %s, sent_at = %s, provider = %s, provider_message_id = %s, "  # noqa: S608
            "next_attempt_at = NULL "
            f"FROM {items} AS i WHERE i.window_id = %s AND i.flushed_at IS NULL "
            "AND d.id = i.delivery_id AND d.status = %s RETURNING d.id, d.notification_id",
            [Status.SENT, now, DIGEST_PROVIDER, str(digest_delivery_id), window.pk, Status.DIGEST],
        )
        rows = cursor.fetchall()
    # Notification ids are time-ordered (UUIDv7): this is the order the events happened in.
    rows.sort(key=lambda row: (row[1], row[0]))
    return [(delivery_id, notification_id) for delivery_id, notification_id in rows]


def _suppress_items(window: DigestWindow, reason: str, now: datetime) -> int:
    return Delivery.objects.filter(
        pk__in=DigestItem.objects.filter(window=window, flushed_at__isnull=True).values("delivery_id"),
        status=Status.DIGEST,
    ).update(status=Status.SUPPRESSED, suppression_reason=reason, failed_at=now)


def _preference(window: DigestWindow, category_id: int) -> Any:
    rows = Preference.objects.filter(
        Q(recipient_id=window.recipient_id) | Q(recipient__isnull=True), tenant_id=window.tenant_id
    ).filter(Q(category_id=category_id) | Q(category__isnull=True))
    return PreferenceIndex(rows, category_id).for_recipient(window.recipient_id)


def _summaries(
    window: DigestWindow, taken: list[tuple[Any, Any]], limit: int, default_locale: str
) -> list[dict[str, Any]]:
    listed = taken[:limit]
    notifications = {
        n.pk: n
        for n in Notification.objects.filter(pk__in={nid for _, nid in listed}).select_related(
            "template", "template_version", "category"
        )
    }
    renderers: dict[Any, NotificationRenderer] = {}
    created = dict(Delivery.objects.filter(pk__in=[did for did, _ in listed]).values_list("pk", "created_at"))
    items = []
    for delivery_id, notification_id in listed:
        notification = notifications[notification_id]
        if notification_id not in renderers:
            renderers[notification_id] = NotificationRenderer(notification, default_locale=default_locale)
        try:
            content = renderers[notification_id].render(window.channel, window.recipient)["content"]
        except rendering.RenderError:
            content = {}
        title = content.get(TITLE_FIELDS.get(window.channel, ""), "")
        items.append(
            {
                "title": title if isinstance(title, str) and title else notification.category.key,
                "body": content.get(BODY_FIELDS.get(window.channel, ""), "") or "",
                "category": notification.category.key,
                "template": notification.template.key if notification.template else "",
                "created_at": created[delivery_id].isoformat(),
                "notification_id": str(notification_id),
                "payload": notification.payload,
            }
        )
    return items


def _default_content(channel: str) -> dict[str, Any]:
    return {rendering.DEFAULT_LOCALE: {channel: DEFAULT_DIGEST_CONTENT[channel]}}


def _digest_template(tenant_id: Any, channel: str, locale: str, category_key: str | None) -> Template | None:
    """The tenant's `digest-<category>` or `digest` template, if it has content for this channel."""
    keys = ([f"digest-{category_key}"] if category_key else []) + ["digest"]
    found = {
        t.key: t
        for t in Template.objects.filter(tenant_id=tenant_id, key__in=keys, archived_at__isnull=True).select_related(
            "current_version"
        )
    }
    for key in keys:
        template = found.get(key)
        version = template.current_version if template is not None else None
        if version is not None and rendering.channel_content(version.content, channel, locale) is not None:
            return template
    return None


def digest_window_flush(*, window_id: Any, now: datetime | None = None) -> str:
    """Flushes one due window (see the module docstring): `sent`, `empty`, or `skipped` (not open,
    not due, or gone)."""
    now = now or timezone.now()
    with transaction.atomic():
        window = (
            DigestWindow.objects.select_for_update(of=("self",))
            .select_related("recipient", "tenant")
            .filter(pk=window_id, status=DigestWindow.Status.OPEN, due_at__lte=now)
            .first()
        )
        if window is None:
            return "skipped"
        category_ids = set(
            DigestItem.objects.filter(window=window, flushed_at__isnull=True).values_list("category_id", flat=True)
        )
        categories = {c.pk: c for c in Category.objects.filter(pk__in=category_ids)}
        single = next(iter(categories.values())) if len(categories) == 1 else None
        category = single or category_get_or_create(tenant=window.tenant, key=DIGEST_CATEGORY)
        preference = _preference(window, category.pk)
        reason = ""
        if window.recipient.unsubscribed_at is not None:
            reason = Delivery.SuppressionReason.UNSUBSCRIBED
        elif not preference.channel_enabled(window.channel):
            reason = Delivery.SuppressionReason.OPTED_OUT
        digest_delivery_id = uuid7()
        taken = [] if reason else _take_items(window, digest_delivery_id, now)
        if reason:
            _suppress_items(window, reason, now)
        DigestItem.objects.filter(window=window, flushed_at__isnull=True).update(flushed_at=now)
        if not taken:
            DigestWindow.objects.filter(pk=window.pk).update(
                status=DigestWindow.Status.EMPTY, flushed_at=now, item_count=0
            )
            return "empty"

        settings = digest_settings()
        tenant_settings: Mapping[str, Any] = window.tenant.settings or {}
        default_locale = str(tenant_settings.get("default_locale", ""))
        items = _summaries(window, taken, settings.item_limit, default_locale)
        template = _digest_template(
            window.tenant_id, window.channel, window.recipient.locale or default_locale, single.key if single else None
        )
        notification = Notification.objects.create(
            tenant_id=window.tenant_id,
            template=template,
            template_version=template.current_version if template else None,
            category=category,
            content=None if template else _default_content(window.channel),
            payload={
                "items": items,
                "count": len(taken),
                "more": max(len(taken) - len(items), 0),
                "frequency": window.frequency,
                "window": {"starts_at": window.starts_at.isoformat(), "ends_at": window.due_at.isoformat()},
            },
            recipient_ids=[window.recipient_id],
            channels=[window.channel],
            priority=Notification.Priority.NORMAL,
            status=Notification.Status.DISPATCHED,
            recipient_count=1,
            idempotency_key=f"digest:{window.pk}",
            metadata={"digest": {"window": str(window.pk), "group": window.group_key, "items": len(taken)}},
            enqueued_at=now,
            fanout_started_at=now,
            dispatched_at=now,
        )
        quiet_until = None
        if not category.critical and window.channel in INTERRUPTING_CHANNELS and preference.has_quiet_hours:
            assert preference.quiet_hours_start and preference.quiet_hours_end
            quiet_until = quiet_hours_until(
                now=now,
                tz=zone(window.recipient.timezone),
                start=preference.quiet_hours_start,
                end=preference.quiet_hours_end,
            )
        Delivery.objects.create(
            id=digest_delivery_id,
            tenant_id=window.tenant_id,
            notification=notification,
            recipient_id=window.recipient_id,
            channel=window.channel,
            template_version=notification.template_version,
            status=Status.DEFERRED if quiet_until else Status.QUEUED,
            next_attempt_at=quiet_until,
            queued_at=None if quiet_until else now,
            created_at=now,
        )
        DigestWindow.objects.filter(pk=window.pk).update(
            status=DigestWindow.Status.SENT, notification=notification, item_count=len(taken), flushed_at=now
        )
        if quiet_until is None:
            publish_on_commit(
                "signalbox.notifications.send_batch",
                [str(digest_delivery_id)],
                [str(notification.pk)],
                queue=queue_for(notification.priority),
            )
    log.info(
        "digest flushed",
        extra={"window_id": str(window_id), "items": len(taken), "channel": window.channel},
    )
    return "sent"
