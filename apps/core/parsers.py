"""Request parsers that refuse hostile input before any view or database sees it.

The API's parser (`REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]`), the request-limits middleware (query
parameters, path) and the callback views that read a body by hand share one set of limits, each refused
with 400 in the `{code, message, fields}` shape:

- `too_deep`: JSON nested deeper than `API_JSON_MAX_DEPTH` (64). Python's decoder recurses, so a body
  nested 10,000 deep would otherwise raise `RecursionError` (a 500);
- `invalid_character`: a NUL (`\\u0000`), which PostgreSQL cannot store in text or JSON, or a lone UTF-16
  surrogate (`\\ud800`), which cannot be encoded as UTF-8 at all, in any string or key; `fields` names
  the path (`metadata.tags[2]`);
- `invalid_number`: `NaN` or `Infinity`, which are not JSON and which PostgreSQL's `jsonb` refuses;
- `parse_error`: anything else that is not JSON.

Bodies larger than `DATA_UPLOAD_MAX_MEMORY_SIZE` are refused before anything reads them, with 413
`too_large` (`apps/core/middleware.py`; Django reads no body that announces no length). A view that
streams its body to disk declares a larger limit of its own (`view_body_limit`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import IO, Any

from django.conf import settings
from django.http import QueryDict
from django.urls import Resolver404, resolve
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from apps.core.conf import core_settings
from apps.core.errors import ApplicationError

# NUL, and UTF-16 surrogates (which only ever reach a Python str unpaired: a `\ud83d\ude00` pair decodes
# to one code point).
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


class TooLarge(ApplicationError):
    status_code = 413
    code = "too_large"


def max_depth() -> int:
    return core_settings().json_max_depth


def max_body_bytes() -> int | None:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # Django's own; None turns the limit off
    return int(limit) if limit is not None else None


def too_large(limit: int | None = None) -> TooLarge:
    limit = max_body_bytes() if limit is None else limit
    return TooLarge(f"The request body is larger than {limit} bytes.", fields={"limit_bytes": limit})


def view_body_limit(request: Any) -> int | None:
    """The body limit of the view `request` goes to, when it declares its own (`max_body_bytes()` on
    the view class: an upload streamed to disk, never read into memory), else the API's."""
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return max_body_bytes()
    declared = getattr(getattr(match.func, "cls", None), "max_body_bytes", None)
    return int(declared()) if callable(declared) else max_body_bytes()


def _invalid_character(path: str) -> ApplicationError:
    return ApplicationError(
        "Text may not contain NUL characters or unpaired UTF-16 surrogates.",
        code="invalid_character",
        fields={path or "body": ["Contains a NUL character or an unpaired surrogate."]},
    )


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_text(value: str, *, path: str) -> None:
    """Refuses a string PostgreSQL or UTF-8 cannot hold (see the module docstring)."""
    if _FORBIDDEN.search(value):
        raise _invalid_character(path)


def check_tree(data: Any, *, limit: int | None = None) -> None:
    """Walks parsed JSON without recursion: refuses depth beyond `limit` and forbidden characters."""
    limit = max_depth() if limit is None else limit
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            check_text(value, path=path)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > limit:
            raise ApplicationError(
                f"JSON may be nested at most {limit} levels deep.", code="too_deep", fields={"limit": limit}
            )
        items: Iterable[tuple[str | int, Any]] = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            child_path = _child_path(path, key)
            if isinstance(key, str):
                check_text(key, path=child_path)
            stack.append((child, child_path, depth + 1))


def _refuse_constant(name: str) -> Any:
    raise ApplicationError(f"{name} is not a JSON number.", code="invalid_number")


def loads(body: bytes | str) -> Any:
    """Parses a JSON body under the limits above; raises `ApplicationError` (400) otherwise."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        # The decoder recursed past Python's own limit (~1000 levels), far beyond ours.
        limit = max_depth()
        raise ApplicationError(
            f"JSON may be nested at most {limit} levels deep.", code="too_deep", fields={"limit": limit}
        ) from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ParseError(f"JSON parse error - {exc}") from None
    check_tree(data)
    return data


def check_query_dict(data: Mapping[str, Any], *, prefix: str = "") -> None:
    """Form fields and query parameters: the same refusal of NUL and surrogates, named by field."""
    lists = data.lists() if isinstance(data, QueryDict) else ((k, [v]) for k, v in data.items())
    for key, values in lists:
        check_text(key, path=prefix + key)
        for value in values:
            if isinstance(value, str):
                check_text(value, path=prefix + key)


class BoundedJSONParser(parsers.JSONParser):
    """DRF's JSON parser under the limits of this module."""

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        body = stream.read() if stream is not None else b""  # within DATA_UPLOAD_MAX_MEMORY_SIZE (middleware)
        encoding = parsers.get_encoding(parser_context or {})  # type: ignore[attr-defined]
        try:
            text = body.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return loads(text)
