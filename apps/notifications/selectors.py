"""Reads: per-channel status counts of notifications, and the querysets the API lists."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, QuerySet

from apps.notifications.models import Delivery, Template, TemplateVersion


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
