"""Query-parameter filtering shared by the API: the filter backend and the filters its filtersets use.

- `FilterBackend` is django-filter's, refusing a boolean filter value that is not a boolean.
  django-filter reads any value of a `BooleanFilter` other than true/false/1/0 (`?enabled=maybe`,
  `?enabled=null`) as "no filter" and answers the whole list, so a typo looks like a match. Here it is
  a 400 on the parameter, like any other invalid filter value. An empty value (`?enabled=`) still means
  "no filter", as for every django-filter parameter; the schema says so (`allowEmptyValue`,
  apps/core/schema.py).
- `IsoDateTimeFilter` is django-filter's, refusing what PostgreSQL cannot compare with: a UTC offset of
  16 hours or more (`+16:00`, which Python accepts and PostgreSQL answers with an error, a 500). The
  refusal is a 400 on the parameter, like any other invalid filter value.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import serializers

BOOLEAN_VALUES = frozenset({"true", "false", "True", "False", "1", "0"})


class FilterBackend(DjangoFilterBackend):
    def get_filterset(self, request: Any, queryset: Any, view: Any) -> Any:
        filterset = super().get_filterset(request, queryset, view)
        if filterset is None:
            return None
        errors = {
            name: ["true or false."]
            for name, declared in filterset.filters.items()
            if isinstance(declared, django_filters.BooleanFilter)
            and any(value not in BOOLEAN_VALUES for value in request.query_params.getlist(name) if value != "")
        }
        if errors:
            raise serializers.ValidationError(errors)
        return filterset


# PostgreSQL accepts UTC offsets up to ±15:59:59; real time zones stay within ±14:00.
MAX_UTC_OFFSET = timedelta(hours=16)


class BoundedIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value: Any) -> datetime | None:
        parsed: datetime | None = super().to_python(value)
        offset = parsed.utcoffset() if parsed is not None else None
        if offset is not None and abs(offset) >= MAX_UTC_OFFSET:
            raise forms.ValidationError("The UTC offset must be between -15:59 and +15:59.", code="invalid")
        return parsed


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time parameter (`2026-01-31T12:00:00+01:00`) within PostgreSQL's offsets."""

    field_class = BoundedIsoDateTimeField
