"""The same streams over WebSocket and Server-Sent Events, as plain ASGI apps under Channels' routing.

Both authenticate like REST: `Authorization: Recipient <token>` or `?token=` for the inbox,
`Authorization: Bearer <key>` or `?key=` (browsers cannot set headers) for the others. The
cursor is `Last-Event-ID` (SSE; EventSource resends it by itself) or `?cursor=` (both).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from apps.realtime import auth, session
from apps.realtime.auth import Principal, Refused
from apps.realtime.db import database_sync_to_async
from apps.realtime.streams import ActivityStream, InboxStream, NotificationStream, Stream, TaskStream
from apps.tenancy.origins import any_tenant_allows

DRAINING = asyncio.Event()  # set at lifespan shutdown: every stream closes 1012 "reconnect"


@dataclass
class Request:
    headers: dict[str, str]
    query: dict[str, str]
    kwargs: dict[str, Any]

    @classmethod
    def of(cls, scope: dict[str, Any]) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        return cls(headers, query, dict(scope.get("url_route", {}).get("kwargs", {})))

    def credential(self, keyword: str, param: str) -> str:
        parts = self.headers.get("authorization", "").split()
        if len(parts) == 2 and parts[0].lower() == keyword.lower():
            return parts[1]
        return self.query.get(param, "")

    def cursor(self) -> int | None:
        raw = self.headers.get("last-event-id") or self.query.get("cursor") or ""
        return int(raw) if raw.isdigit() else None


Opened = tuple[Stream, Principal, list[tuple[str, int]]]


def _open(kind: str, request: Request) -> Opened:
    """Authenticates and builds the stream (sync: it reads the database)."""
    cfg = settings.SIGNALBOX_REALTIME
    tenant_header = request.headers.get("x-tenant-id", "")
    if kind == "inbox":
        token = request.credential("Recipient", "token")
        if not token:
            raise Refused(401, "not_authenticated", "Send 'Authorization: Recipient <token>' or ?token=.")
        principal = auth.recipient_principal(token)
        stream: Stream = InboxStream(principal)
    else:
        key = request.credential("Bearer", "key")
        if not key:
            raise Refused(401, "not_authenticated", "Send 'Authorization: Bearer <api key>' or ?key=.")
        scope = auth.TASKS if kind == "task" else auth.READ
        principal = auth.key_principal(key, scope, tenant_header)
        if kind == "task":
            stream = TaskStream(principal, str(request.kwargs["id"]))
        elif kind == "notification":
            stream = NotificationStream(principal, str(request.kwargs["id"]))
        else:
            stream = ActivityStream(principal)
    if not stream.exists():  # another tenant's task answers 404, as over REST
        raise Refused(404, "not_found", "Not found.")
    if not auth.origin_allowed(request.headers.get("origin", ""), principal):
        raise Refused(403, "origin_not_allowed", "This origin may not open streams.")
    limits = [(f"t.{principal.tenant_id}", int(cfg["MAX_PER_TENANT"]))]
    if principal.recipient_pk is not None:
        limits.append((f"r.{principal.recipient_pk}", int(cfg["MAX_PER_RECIPIENT"])))
    return stream, principal, limits


def _json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))


def websocket(kind: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        request = Request.of(scope)

        async def close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason[:120]})

        try:
            stream, principal, limits = await database_sync_to_async(_open)(kind, request)
        except Refused as exc:
            await close(exc.close_code, exc.message)
            return

        async def out(message: dict[str, Any]) -> None:
            await send({"type": "websocket.send", "text": _json(message)})

        runner = asyncio.create_task(
            session.run(
                stream=stream, principal=principal, limits=limits,
                cursor=request.cursor(), send=out, draining=DRAINING,
            )
        )  # fmt: skip
        gone = asyncio.create_task(_until_disconnect(receive, "websocket.disconnect"))
        done, _ = await asyncio.wait({runner, gone}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            gone.cancel()
            ended = runner.result()
            await close(ended.code, ended.reason)
        else:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    return app


async def _until_disconnect(receive: Any, kind: str) -> None:
    while (await receive())["type"] != kind:
        pass


PREFLIGHT_HEADERS = b"authorization, last-event-id, x-tenant-id"


def _cors(origin: str) -> list[tuple[bytes, bytes]]:
    """What lets a browser on another origin (the product's page; the stream is served by its own
    process) read the answer: only for an origin already allowed, and never with cookies."""
    if not origin:
        return []
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


async def _preflight(request: Request, send: Any) -> None:
    """A browser's `fetch` with an `Authorization` header asks first, without credentials, so no
    tenant is known yet: an origin some tenant allows is answered (apps/tenancy/origins.py); the
    stream request itself is then checked against its own tenant's origins."""
    origin = request.headers.get("origin", "")
    allowed = bool(origin) and await database_sync_to_async(any_tenant_allows)(origin)
    headers = _cors(origin) if allowed else []
    if allowed:
        headers += [
            (b"access-control-allow-methods", b"GET"),
            (b"access-control-allow-headers", PREFLIGHT_HEADERS),
            (b"access-control-max-age", b"600"),
        ]
    await send({"type": "http.response.start", "status": 204 if allowed else 403, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def sse(kind: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request.of(scope)
        if scope.get("method") == "OPTIONS":
            await _preflight(request, send)
            return
        origin = request.headers.get("origin", "")
        try:
            stream, principal, limits = await database_sync_to_async(_open)(kind, request)
        except Refused as exc:
            body = _json({"code": exc.code, "message": exc.message, "fields": {}}).encode()
            readable = _cors(origin) if exc.code != "origin_not_allowed" else []
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", b"application/json"), *readable]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"), *_cors(origin)],
        })  # fmt: skip

        async def out(message: dict[str, Any]) -> None:
            if message.get("type") == "heartbeat":
                chunk = ": heartbeat\n\n"
            else:
                head = f"id: {message['id']}\n" if message.get("id") is not None else ""
                chunk = f"{head}event: {message['type']}\ndata: {_json(message)}\n\n"
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})

        runner = asyncio.create_task(
            session.run(
                stream=stream, principal=principal, limits=limits,
                cursor=request.cursor(), send=out, draining=DRAINING,
            )
        )  # fmt: skip
        gone = asyncio.create_task(_until_disconnect(receive, "http.disconnect"))
        done, _ = await asyncio.wait({runner, gone}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            gone.cancel()
            ended = runner.result()
            event = "end" if ended.code in (session.NORMAL, session.UNAUTHORIZED, 4003, 4004) else "reconnect"
            last = f"event: {event}\ndata: {_json({'code': ended.code, 'reason': ended.reason})}\n\n"
            await send({"type": "http.response.body", "body": last.encode(), "more_body": False})
        else:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    return app
