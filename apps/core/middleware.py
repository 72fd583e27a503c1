"""Request-scoped middleware: a request id and an access-log line on every request, input limits
answered in JSON before any view runs, and a JSON 503 when the database is gone."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from apps.core import context
from apps.core.errors import ApplicationError, error_body
from apps.core.parsers import check_query_dict, check_text, max_body_bytes, too_large, view_body_limit

access_log = logging.getLogger("signalbox.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Takes `X-Request-ID` from the caller (or makes one) and returns it; tasks inherit it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.monotonic()
        with context.bound(request_id=request_id):
            response = self.get_response(request)
            _access_log(request, response, time.monotonic() - started)
        response["X-Request-ID"] = request_id
        return response


# Probed or scraped every few seconds: logged at DEBUG only.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _access_log(request: HttpRequest, response: HttpResponse, seconds: float) -> None:
    """One line per request, with the request id and tenant bound; the path without its query string."""
    level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
    if access_log.isEnabledFor(level):
        access_log.log(
            level,
            "request finished",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 1),
            },
        )


class DatabaseUnavailableMiddleware:
    """Outside DRF views (admin, health) a lost database still answers JSON 503, never a 500 page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (OperationalError, InterfaceError)):
            body = error_body("database_unavailable", "The database is unavailable; retry shortly.")
            return HttpResponse(
                json.dumps(body), status=503, content_type="application/json", headers={"Retry-After": "5"}
            )
        return None


def _json_error(error: ApplicationError) -> HttpResponse:
    body = error_body(error.code, error.message, error.fields)
    return HttpResponse(json.dumps(body), status=error.status_code, content_type="application/json")


def too_many_fields() -> ApplicationError:
    return ApplicationError("The form has too many fields.", code="too_many_fields")


class RequestLimitsMiddleware:
    """Refuses, in the JSON error shape and before any view or parser runs, a body announced larger than
    `DATA_UPLOAD_MAX_MEMORY_SIZE`, or the view's own `max_body_bytes()` (413 `too_large`, where Django
    would answer an HTML 400) and a path or
    query parameter holding a NUL (400 `invalid_character`, where PostgreSQL would raise a 500)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = max_body_bytes()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            # Rare, so resolved only then: an upload view may stream a larger body to disk.
            limit = view_body_limit(request)
            if limit is not None and length > limit:
                return _json_error(too_large(limit))
        try:
            check_text(request.path, path="path")
            check_query_dict(request.GET, prefix="query.")
        except ApplicationError as refused:
            return _json_error(refused)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Django's own limits met by a plain Django view reading a form (`request.POST`): JSON, not HTML."""
        if isinstance(exception, RequestDataTooBig):
            return _json_error(too_large())
        if isinstance(exception, TooManyFieldsSent):
            return _json_error(too_many_fields())
        return None
