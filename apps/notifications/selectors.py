"""Reads: per-channel status counts of notifications, and the querysets the API lists."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, QuerySet

from apps.core.rows import db_param, model_columns, model_from_row
from apps.notifications.models import (
    Category,
    Delivery,
    DeliveryAttempt,
    Engagement,
    Recipient,
    Template,
    TemplateVersion,
)


def notification_counts(notification_ids: Iterable[Any]) -> dict[Any, dict[str, dict[str, int]]]:
    """`{notification_id: {channel: {status: n}}}` in one GROUP BY over the counts index.

    Counts are computed, not maintained, so no status change anywhere can make them drift.
    """
    ids = list(notification_ids)
    counts: dict[Any, dict[str, dict[str, int]]] = {pk: {} for pk in ids}
    if not ids:
        return counts
    rows = (
        Delivery.objects.filter(notification_id__in=ids)
        .values_list("notification_id", "channel", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    for notification_id, channel, status, n in rows:
        counts[notification_id].setdefault(channel, {})[status] = n
    return counts


def totals(by_channel: dict[str, dict[str, int]]) -> dict[str, int]:
    result: dict[str, int] = defaultdict(int)
    for statuses in by_channel.values():
        for status, n in statuses.items():
            result[status] += n
    return dict(result)


def template_versions(*, template: Template) -> QuerySet[TemplateVersion]:
    return TemplateVersion.objects.filter(template=template).order_by("-version")


def engagement_summary(*, tenant_id: Any, delivery_id: Any) -> dict[str, Any]:
    """A delivery's opens and clicks, as its API detail shows them."""
    opens: dict[str, Any] = {"count": 0, "first_at": None, "last_at": None}
    clicks: list[dict[str, Any]] = []
    for row in Engagement.objects.filter(tenant_id=tenant_id, delivery_id=delivery_id).order_by("first_at"):
        if row.kind == Engagement.Kind.OPEN:
            opens = {"count": row.count, "first_at": row.first_at, "last_at": row.last_at}
        else:
            clicks.append({"url": row.url, "count": row.count, "first_at": row.first_at, "last_at": row.last_at})
    return {"opens": opens, "clicks": clicks}


def engagement_kinds(*, delivery_ids: Iterable[Any], kinds: Iterable[str]) -> list[tuple[Any, str]]:
    """(delivery id, kind) for each of these deliveries opened (`open`) or clicked (`click`) at
    least once: what a flow's branch on `opened` / `clicked` reads."""
    ids, wanted = list(delivery_ids), list(kinds)
    if not ids or not wanted:
        return []
    rows = Engagement.objects.filter(delivery_id__in=ids, kind__in=wanted).order_by().values_list("delivery_id", "kind")
    return list(rows.distinct())


def provider_recent_outcomes(*, tenant: Any, provider: str, limit: int) -> list[bool]:
    """Whether each of the tenant's last `limit` attempts through `provider` was accepted, newest
    first: the error rate of the providers' health overview (plugged into apps.providers.selectors
    by `NotificationsConfig.ready()`, as the attempts are recorded above the providers app)."""
    outcomes = (
        DeliveryAttempt.objects.filter(delivery__tenant=tenant, provider=provider)
        .order_by("-id")
        .values_list("outcome", flat=True)[:limit]
    )
    return [outcome == DeliveryAttempt.Outcome.ACCEPTED for outcome in outcomes]


def deliveries_filtered(
    *,
    tenant_id: Any,
    status: Sequence[str] | None = None,
    channel: Sequence[str] | None = None,
    notification: Any = None,
    error_code: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Delivery]:
    """The tenant's deliveries matching a bulk filter, oldest first: the one place the export,
    resend and bulk replay jobs select deliveries by status, channel, notification, error and time."""
    deliveries = Delivery.objects.filter(tenant_id=tenant_id)
    if status:
        deliveries = deliveries.filter(status__in=status)
    if channel:
        deliveries = deliveries.filter(channel__in=channel)
    if notification:
        deliveries = deliveries.filter(notification_id=notification)
    if error_code:
        deliveries = deliveries.filter(error_code=error_code)
    if created_after:
        deliveries = deliveries.filter(created_at__gte=created_after)
    if created_before:
        deliveries = deliveries.filter(created_at__lt=created_before)
    return deliveries.order_by("created_at", "id")


# --- The send path's reads, built once ------------------------------------------------------------
# Django's ORM compiled the same SELECTs on every `POST /api/v1/notifications/` (about a third of its
# Python, docs/benchmarks.md "API"); these are the statements it built, made once from the models'
# own metadata, and the rows become models through the fields' own converters (apps/core/rows.py).


@functools.cache
def _template_sql() -> str:
    q = connection.ops.quote_name
    t, c, v = (q(m._meta.db_table) for m in (Template, Category, TemplateVersion))
    columns = ", ".join(model_columns(m, a) for m, a in ((Template, "t"), (Category, "c"), (TemplateVersion, "v")))
    # Names from the models' metadata, quoted; the values are parameters.
    return (
        f"SELECT {columns} FROM {t} t INNER JOIN {c} c ON c.{q('id')} = t.{q('category_id')} "  # noqa: S608
        f"LEFT OUTER JOIN {v} v ON v.{q('id')} = t.{q('current_version_id')} "
        f"WHERE t.{q('tenant_id')} = %s AND t.{q('key')} = %s LIMIT 1"
    )


def template_for_send(*, tenant_id: Any, key: str) -> Template | None:
    """The tenant's template by key with its category and current version, in one read: what
    `Template.objects.filter(...).select_related("current_version", "category").first()` returns."""
    with connection.cursor() as cursor:
        cursor.execute(_template_sql(), [db_param(Template, "tenant", tenant_id), key])
        row = cursor.fetchone()
    if row is None:
        return None
    n_template, n_category = len(Template._meta.concrete_fields), len(Category._meta.concrete_fields)
    template = model_from_row(Template, list(row[:n_template]))
    category = model_from_row(Category, list(row[n_template : n_template + n_category]))
    version_values = list(row[n_template + n_category :])
    version = model_from_row(TemplateVersion, version_values) if version_values[0] is not None else None
    # As select_related leaves them: the relations cached, so reading them costs no query.
    Template._meta.get_field("category").set_cached_value(template, category)  # type: ignore[union-attr]
    Template._meta.get_field("current_version").set_cached_value(template, version)  # type: ignore[union-attr]
    return template


def recipient_ids_by_external_id(*, tenant_id: Any, external_ids: Sequence[str]) -> dict[str, int]:
    """{external_id: pk} of the tenant's recipients among `external_ids`, in one read (`IN` with one
    parameter per id: the statement is the same text for the same number of ids)."""
    wanted = list(dict.fromkeys(external_ids))
    if not wanted:
        return {}
    q = connection.ops.quote_name
    placeholders = ", ".join(["%s"] * len(wanted))
    sql = (
        f"SELECT {q('external_id')}, {q('id')} FROM {q(Recipient._meta.db_table)} "  # noqa: S608
        f"WHERE {q('tenant_id')} = %s AND {q('external_id')} IN ({placeholders})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [db_param(Recipient, "tenant", tenant_id), *wanted])
        return dict(cursor.fetchall())
