"""Strict JSON types for request bodies: a boolean field takes `true`/`false`, a string field (and a
UUID field) a string, an integer field a number.

DRF coerces: `0`/`1`/`"yes"` pass as booleans, `42` as the string `"42"`, `"7"` as the integer 7. The
schema says `boolean`, `string` and `integer`, so a client reading it (or a fuzzer) sees a request the
schema calls invalid accepted. `install()` (from `CoreConfig.ready`, once) makes `BooleanField`,
`CharField` (and its subclasses: email, URL, slug, regex), `IntegerField` and `UUIDField` refuse another
JSON type with their own `invalid` message: 400 `validation_error` naming the field.

Only JSON data is strict. Data that came as text (a `QueryDict`: query parameters, a provider's form
callback) keeps DRF's reading of `"true"`/`"1"`; query-parameter filters are django-filter's and never
reach these fields. A field used on its own, outside a serializer given data, is not changed either.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.http import QueryDict
from rest_framework import serializers

_INSTALLED: dict[str, Any] = {}


def _reads_json(field: serializers.Field) -> bool:
    """Whether the field is reading the data of a serializer given parsed JSON (not a `QueryDict`)."""
    data = getattr(field.root, "initial_data", None)
    return data is not None and not isinstance(data, QueryDict)


def _strict(original: Callable[..., Any], accepts: Callable[[Any], bool]) -> Callable[..., Any]:
    def to_internal_value(self: serializers.Field, data: Any) -> Any:
        if _reads_json(self) and not accepts(data):
            self.fail("invalid")
        return original(self, data)

    to_internal_value.__doc__ = original.__doc__
    return to_internal_value


def install() -> None:
    """Makes these field classes strict about JSON types (idempotent)."""
    if _INSTALLED:
        return
    rules: dict[type[serializers.Field], Callable[[Any], bool]] = {
        serializers.BooleanField: lambda value: isinstance(value, bool),
        serializers.CharField: lambda value: isinstance(value, str),
        # 3 and 3.0 are the same JSON number; DRF refuses 3.5 itself.
        serializers.IntegerField: lambda value: isinstance(value, int | float) and not isinstance(value, bool),
        # DRF reads an integer as a UUID (`false` as 00000000-…); the schema says a string.
        serializers.UUIDField: lambda value: isinstance(value, str | uuid.UUID),
    }
    for field_class, accepts in rules.items():
        original = field_class.to_internal_value
        _INSTALLED[field_class.__name__] = original
        field_class.to_internal_value = _strict(original, accepts)  # type: ignore[method-assign]
