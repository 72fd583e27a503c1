"""Marking an endpoint deprecated: `Deprecation`, `Sunset` (and `Link`) headers on its answers, a note in the schema.

On a view class, once per path and method that goes away (stack the decorator for several):

    @deprecated(path="/api/v1/old/{key}/", method="DELETE", since="2026-01-15", sunset="2026-07-31",
                note="Archive it instead: POST /api/v1/old/{key}/archive/.", link="https://docs.example.com/x")

`path` is the path as the OpenAPI schema spells it (version and `{parameters}` included): it selects the
answers that get the headers (RFC 9745 `Deprecation`, RFC 8594 `Sunset`) and the schema operation that is
marked `deprecated` (apps/core/schema.py). Answers of the view's other paths and methods are untouched.
Fields are deprecated with drf-spectacular's `@extend_schema_serializer(deprecate_fields=[...])`.
See docs/architecture.md, "Deprecating an endpoint or a field".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from email.utils import format_datetime
from typing import Any, TypeVar

from rest_framework.views import APIView

# (schema path, HTTP method or "*") -> the note the schema shows.
DEPRECATED_PATHS: dict[tuple[str, str], str] = {}

ViewT = TypeVar("ViewT", bound=type[APIView])


def _midnight_utc(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)


def path_pattern(path: str) -> re.Pattern[str]:
    """The request paths a schema path stands for: each `{parameter}` is one path segment."""
    return re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)))


def deprecated(
    *, path: str, since: str, sunset: str, note: str, method: str = "*", link: str = ""
) -> Callable[[ViewT], ViewT]:
    """Marks `method` (or every method: "*") of `path`, served by the decorated view, as deprecated.

    `since` and `sunset` are ISO dates (midnight UTC): when it was deprecated, when it stops answering.
    `link` is a page explaining the change (the `Link: <…>; rel="deprecation"` header), if there is one.
    """
    method = method.upper()
    since_at, sunset_at = _midnight_utc(since), _midnight_utc(sunset)
    if sunset_at <= since_at:
        raise ValueError(f"The sunset ({sunset}) of {method} {path} must come after its deprecation ({since}).")
    matches = path_pattern(path).fullmatch
    headers = {
        "Deprecation": f"@{int(since_at.timestamp())}",
        "Sunset": format_datetime(sunset_at, usegmt=True),
    }

    def decorate(view_cls: ViewT) -> ViewT:
        DEPRECATED_PATHS[(path, method)] = f"{note} Sunset on {sunset}."
        original = view_cls.finalize_response

        def finalize_response(self: APIView, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
            response = original(self, request, response, *args, **kwargs)
            if method in ("*", request.method) and matches(request.path_info):
                for name, value in headers.items():
                    response[name] = value
                if link:
                    deprecation_link = f'<{link}>; rel="deprecation"'
                    response["Link"] = (
                        f"{response['Link']}, {deprecation_link}" if "Link" in response else deprecation_link
                    )
            return response

        setattr(view_cls, "finalize_response", finalize_response)  # noqa: B010  (mypy refuses assigning a method)
        return view_cls

    return decorate
