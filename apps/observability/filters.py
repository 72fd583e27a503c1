"""Filters of the audit log API: by action, actor, target, request and time."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from apps.core.filters import IsoDateTimeFilter
from apps.observability.models import AuditEntry


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class AuditEntryFilter(django_filters.FilterSet):
    action = django_filters.CharFilter(
        method="filter_action",
        help_text="Exact action, several comma-separated, or a prefix ending in '.': `api_key.`.",
    )
    actor = django_filters.CharFilter(
        method="filter_actor", help_text="`type:id` (`api_key:sbx_AbCd1234`, `staff:alice`), or a bare actor id."
    )
    actor_type = django_filters.CharFilter(field_name="actor_type")
    target = django_filters.CharFilter(
        method="filter_target", help_text="`type:id` (`tenancy.apikey:42`), or a bare target id."
    )
    target_type = django_filters.CharFilter(field_name="target_type")
    request_id = django_filters.CharFilter(field_name="request_id")
    since = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="ISO 8601, inclusive.")
    until = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="ISO 8601, exclusive.")

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def filter_action(self, queryset: QuerySet[AuditEntry], name: str, value: str) -> QuerySet[AuditEntry]:
        condition = Q()
        for part in _split(value):
            condition |= Q(action__startswith=part) if part.endswith(".") else Q(action=part)
        return queryset.filter(condition) if condition else queryset

    def filter_actor(self, queryset: QuerySet[AuditEntry], name: str, value: str) -> QuerySet[AuditEntry]:
        return queryset.filter(**_typed("actor", value))

    def filter_target(self, queryset: QuerySet[AuditEntry], name: str, value: str) -> QuerySet[AuditEntry]:
        return queryset.filter(**_typed("target", value))


def _typed(prefix: str, value: str) -> dict[str, Any]:
    kind, sep, ident = value.partition(":")
    if sep and kind and ident:
        return {f"{prefix}_type": kind, f"{prefix}_id": ident}
    return {f"{prefix}_id": value}
