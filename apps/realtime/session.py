"""One open stream, whatever its transport: subscribe, replay, then the live feed, until it ends.

Order at the seam: the connection joins its groups *before* reading the backlog, so a change
committed meanwhile is both replayed and queued live; the live copy is dropped by id. Layer
messages go into a per-connection queue of at most QUEUE_LIMIT; a client too slow to drain it is
closed (4008) and resumes from its cursor. A failing layer or Redis closes the stream (1013).

Periodic work is per process, not per stream (`Hub`): one timer renews the presence entries of
all the process's streams in one Redis pipeline and sends their heartbeats every
HEARTBEAT_SECONDS, and re-checks all their credentials in a few queries every
AUTH_RECHECK_SECONDS, closing the streams whose key or token was revoked (4001). An idle stream
costs no timer, no Redis command and no query of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from apps.realtime import auth
from apps.realtime.auth import Principal, Refused
from apps.realtime.db import database_sync_to_async
from apps.realtime.presence import Presence, refresh_all
from apps.realtime.streams import Msg, Stream

log = logging.getLogger(__name__)

# Close codes (WebSocket close frames; SSE sends them in its last event). docs/realtime.md.
NORMAL = 1000  # the task or notification is final
RESTART = 1012  # the process is draining: reconnect now (to another process), with the cursor
TRY_AGAIN = 1013  # the channel layer (Redis) is unavailable: poll REST, reconnect later
SLOW = 4008  # the client fell QUEUE_LIMIT messages behind: reconnect with the cursor
REPLAY_TOO_LONG = 4009  # more than REPLAY_LIMIT missed: reload over REST, reconnect without a cursor
UNAUTHORIZED = 4001  # token or key invalid, expired or revoked


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


Send = Callable[[Msg], Awaitable[None]]
HEARTBEAT = "heartbeat"  # put in a stream's queue by the hub


class Conn:
    """What the hub knows of one open stream."""

    def __init__(self, presence: Presence, principal: Principal, queue: asyncio.Queue[Any]) -> None:
        self.presence = presence
        self.principal = principal
        self.queue = queue
        self.stop: Closed | None = None  # set by the hub; wins over anything still queued

    def close(self, reason: Closed) -> None:
        if self.stop is None:
            self.stop = reason
            self.queue.put_nowait(reason)


class Hub:
    """The process's open streams and the one timer that does their periodic work."""

    def __init__(self) -> None:
        self.conns: dict[str, Conn] = {}
        self.timer: asyncio.Task[None] | None = None
        self.rechecks = 0  # completed credential re-checks (visible to tests and benchmarks)

    def add(self, conn: Conn) -> None:
        self.conns[conn.presence.conn_id] = conn
        if self.timer is None or self.timer.done():
            self.timer = asyncio.create_task(self._tick())

    def remove(self, conn: Conn) -> None:
        self.conns.pop(conn.presence.conn_id, None)

    async def _tick(self) -> None:
        cfg = settings.SIGNALBOX_REALTIME
        beat, auth_every = float(cfg["HEARTBEAT_SECONDS"]), float(cfg["AUTH_RECHECK_SECONDS"])
        now = time.monotonic()
        next_beat, next_auth = now + beat, now + auth_every
        while self.conns:
            await asyncio.sleep(max(min(next_beat, next_auth) - time.monotonic(), 0))
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat
                await self._beat()
            if now >= next_auth:
                next_auth = now + auth_every
                await self._recheck()
        self.timer = None

    async def _beat(self) -> None:
        conns = list(self.conns.values())
        try:
            await refresh_all([c.presence for c in conns])
        except Exception:
            log.warning("realtime presence refresh failed; closing this process's streams", exc_info=True)
            for conn in conns:
                conn.close(Closed(TRY_AGAIN, "The realtime layer is unavailable; poll and retry later."))
            return
        for conn in conns:
            conn.queue.put_nowait(HEARTBEAT)

    async def _recheck(self) -> None:
        principals = {conn_id: conn.principal for conn_id, conn in self.conns.items()}
        try:
            ended = await database_sync_to_async(auth.recheck)(principals)
        except Exception:  # the database is away: keep the streams, check again next time
            log.warning("realtime credential re-check failed", exc_info=True)
            return
        self.rechecks += 1
        for conn_id in ended:
            conn = self.conns.get(conn_id)
            if conn is not None:
                conn.close(Closed(UNAUTHORIZED, "The token or key has been revoked."))


_hubs: dict[Any, Hub] = {}


def hub() -> Hub:
    """This event loop's hub (one per process in production)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]


async def run(
    *,
    stream: Stream,
    principal: Principal,
    limits: list[tuple[str, int]],
    cursor: int | None,
    send: Send,
    draining: asyncio.Event,
) -> Closed:
    """Runs the stream until it ends; returns why (the transport turns it into a close)."""
    cfg = settings.SIGNALBOX_REALTIME
    layer = get_channel_layer()
    if layer is None:
        return Closed(TRY_AGAIN, "The realtime layer is not configured.")
    presence = Presence(uuid.uuid4().hex, [*stream.groups, *stream.markers], limits)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    conn = Conn(presence, principal, queue)
    channel = ""
    reader: asyncio.Task[None] | None = None
    try:
        try:
            async with _gate():  # a reconnect storm queues here rather than exhausting Redis pools
                if not await presence.enter():
                    raise Refused(429, "too_many_connections", "Too many open streams for this recipient or tenant.")
                channel = await layer.new_channel()
                for group in stream.groups:
                    await layer.group_add(group, channel)
        except Refused:
            raise
        except Exception as exc:  # Redis down at connect
            log.warning("realtime layer unavailable at connect", exc_info=True)
            raise Closed(TRY_AGAIN, "The realtime layer is unavailable; poll and retry later.") from exc
        hub().add(conn)
        reader = asyncio.create_task(_read(layer, channel, queue, int(cfg["QUEUE_LIMIT"])))
        for message in await stream.start(cursor):
            await send(message)
        await _flush(stream, send)
        if stream.final:
            return Closed(NORMAL, "final")
        return await _loop(stream, conn, send, draining)
    except Refused as exc:
        return Closed(exc.close_code, exc.message) if exc.status != 409 else Closed(REPLAY_TOO_LONG, exc.message)
    except Closed as exc:
        return exc
    finally:
        hub().remove(conn)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if channel:
            with contextlib.suppress(Exception):
                for group in stream.groups:
                    await asyncio.wait_for(layer.group_discard(group, channel), 1)
        await presence.leave()


_gates: dict[Any, asyncio.Semaphore] = {}


def _gate() -> asyncio.Semaphore:
    """At most 32 streams of this process subscribe at once (per event loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _gates:
        _gates[loop] = asyncio.Semaphore(32)
    return _gates[loop]


async def _read(layer: Any, channel: str, queue: asyncio.Queue[Any], limit: int) -> None:
    try:
        while True:
            message = await layer.receive(channel)
            if queue.qsize() >= limit:
                queue.put_nowait(Closed(SLOW, "Too far behind; reconnect with your cursor."))
                return
            queue.put_nowait(message.get("m"))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.warning("realtime layer receive failed", exc_info=True)
        queue.put_nowait(Closed(TRY_AGAIN, "The realtime layer is unavailable; poll and retry later."))


async def _flush(stream: Stream, send: Send) -> None:
    for message in await stream.after_batch():
        await send(message)


async def _loop(stream: Stream, conn: Conn, send: Send, draining: asyncio.Event) -> Closed:
    """Waits on the queue only: layer messages, the hub's heartbeats and closes. Its own timeouts
    are the token's expiry (no query: it is in the token) and a state stream's safety re-read."""
    refresh_every = float(settings.SIGNALBOX_REALTIME["STATE_REFRESH_SECONDS"])
    next_refresh = time.monotonic() + refresh_every
    expires_at = conn.principal.expires_at
    queue = conn.queue
    while True:
        deadlines = [next_refresh] if stream.refreshes else []
        if expires_at is not None:
            deadlines.append(time.monotonic() + max((expires_at - timezone.now()).total_seconds(), 0) + 0.01)
        try:
            if deadlines:
                item = await asyncio.wait_for(queue.get(), timeout=max(min(deadlines) - time.monotonic(), 0.01))
            else:
                item = await queue.get()
        except TimeoutError:
            item = None
        while item is not None:
            if conn.stop is not None:
                return conn.stop
            if draining.is_set():
                return Closed(RESTART, "reconnect")
            if isinstance(item, Closed):
                return item
            if item == HEARTBEAT:
                await send({"type": "heartbeat"})
            else:
                for message in await stream.live(item):
                    await send(message)
            item = None if queue.empty() else queue.get_nowait()
        if expires_at is not None and expires_at <= timezone.now():
            return Closed(UNAUTHORIZED, "The token or key has expired.")
        if stream.refreshes and time.monotonic() >= next_refresh:
            next_refresh = time.monotonic() + refresh_every
            for message in await stream.refresh():
                await send(message)
        await _flush(stream, send)
        if stream.final:
            return Closed(NORMAL, "final")
