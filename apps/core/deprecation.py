"""Marking an endpoint deprecated: `Deprecation` and `Sunset` headers on every answer, a note in the schema.

Usage on a view class: `@deprecated(path="/api/v1/old/", sunset="2027-06-30", note="Use /api/v1/new/.")`.
Fields are deprecated with drf-spectacular's `extend_schema_field` / `deprecate_fields` helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from email.utils import format_datetime
from typing import Any, TypeVar

DEPRECATED_PATHS: dict[tuple[str, str], str] = {}

V = TypeVar("V")


def deprecated(*, path: str, sunset: str, note: str, method: str = "*") -> Callable[[V], V]:
    sunset_at = datetime.combine(date.fromisoformat(sunset), time(0), tzinfo=UTC)

    def decorate(view_cls: V) -> V:
        DEPRECATED_PATHS[(path, method)] = f"{note} Sunset on {sunset}."
        original: Any = view_cls.finalize_response  # type: ignore[attr-defined]

        def finalize_response(self: Any, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
            response = original(self, request, response, *args, **kwargs)
            response["Deprecation"] = "true"
            response["Sunset"] = format_datetime(sunset_at, usegmt=True)
            response["Link"] = f'<{path}>; rel="deprecation"'
            return response

        view_cls.finalize_response = finalize_response  # type: ignore[attr-defined]
        return view_cls

    return decorate
