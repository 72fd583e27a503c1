"""The realtime process's routes: the four streams, each as WebSocket and as SSE, plus health."""

from __future__ import annotations

from typing import Any

from django.urls import path, re_path

from apps.realtime.schema import PATH as SCHEMA_PATH
from apps.realtime.schema import message_schema_bytes
from apps.realtime.transports import DRAINING, sse, websocket

STREAMS = [
    ("api/v1/inbox/stream/", "inbox"),
    ("api/v1/tasks/<uuid:id>/stream/", "task"),
    ("api/v1/notifications/<uuid:id>/stream/", "notification"),
    ("api/v1/stream/activity/", "activity"),
]

# Channels' URLRouter takes ASGI apps where Django's stubs expect views.
websocket_urlpatterns = [path(route, websocket(kind)) for route, kind in STREAMS]


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Liveness and readiness: 503 once draining, so the load balancer stops sending new streams."""
    status = 503 if DRAINING.is_set() else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"draining" if status == 503 else b"ok"})


async def schema(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The message schema, also here, for clients that only talk to the realtime process."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": message_schema_bytes()})


async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Everything else lives on the API (WSGI) process."""
    body = b'{"code":"not_found","message":"The realtime process serves only streams.","fields":{}}'
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


http_urlpatterns = [
    *(path(route, sse(kind)) for route, kind in STREAMS),
    path("healthz", health),  # type: ignore[arg-type]
    path(SCHEMA_PATH, schema),  # type: ignore[arg-type]
    re_path(r"", not_found),  # type: ignore[arg-type]
]
