"""One open stream, whatever its transport: subscribe, replay, then the live feed, until it ends.

Order at the seam: the connection joins its groups *before* reading the backlog, so a change
committed meanwhile is both replayed and queued live; the live copy is dropped by id. Live
messages go into a per-connection queue of at most QUEUE_LIMIT; a client too slow to drain it is
closed (4008) and resumes from its cursor. A failing layer or Redis closes the stream (1013).

A process has one layer channel (`Hub`), not one per stream: publishers send each batch as one
layer message per process holding streams of its groups, and the hub hands the items out. The
channel layer receives message by message with several Redis round trips each, so one message
per recipient would cap a process far below the rate of a fan-out (bench/realtime/layer.py).

Periodic work is per process, not per stream (`Hub`): one timer renews the presence entries of
all the process's streams in one Redis pipeline and sends their heartbeats every
HEARTBEAT_SECONDS, and re-checks all their credentials in a few queries every
AUTH_RECHECK_SECONDS, closing the streams whose key or token was revoked (4001). An idle stream
costs no timer, no Redis command and no query of its own.
"""

from __future__ import annotations

import asyncio
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

    def __init__(self, principal: Principal, groups: list[str], limit: int) -> None:
        self.conn_id = uuid.uuid4().hex
        self.principal = principal
        self.groups = groups
        self.limit = limit
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.presence: Presence | None = None  # once it holds its slots
        self.stop: Closed | None = None  # set by the hub; wins over anything still queued

    def deliver(self, message: Any) -> None:
        if self.stop is not None:
            return
        if self.queue.qsize() >= self.limit:
            self.close(Closed(SLOW, "Too far behind; reconnect with your cursor."))
        else:
            self.queue.put_nowait(message)

    def close(self, reason: Closed) -> None:
        if self.stop is None:
            self.stop = reason
            self.queue.put_nowait(reason)


class Hub:
    """The process's open streams, its one layer channel and the one timer of their periodic work.

    Publishers send a batch as one layer message per process (`presence.routes`); the hub's reader
    hands each item to the streams of its group, each into its own bounded queue."""

    def __init__(self) -> None:
        self.conns: dict[str, Conn] = {}
        self.by_group: dict[str, set[Conn]] = {}
        self.channel = ""
        self.reader: asyncio.Task[None] | None = None
        self.timer: asyncio.Task[None] | None = None
        self.opening = asyncio.Lock()
        self.rechecks = 0  # completed credential re-checks (visible to tests and benchmarks)
        self.refreshed = time.monotonic()  # the last presence renewal that succeeded

    async def join(self, conn: Conn) -> str:
        """Registers the stream (its messages are routed to it from now on); returns the process's
        layer channel, opened on first use. Raises when the layer is unreachable."""
        async with self.opening:
            if not self.channel:
                layer = get_channel_layer()
                assert layer is not None
                self.channel = await layer.new_channel()
                self.reader = asyncio.create_task(self._receive(layer, self.channel))
        self.conns[conn.conn_id] = conn
        for group in conn.groups:
            self.by_group.setdefault(group, set()).add(conn)
        if self.timer is None or self.timer.done():
            self.timer = asyncio.create_task(self._tick())
        return self.channel

    def leave(self, conn: Conn) -> None:
        self.conns.pop(conn.conn_id, None)
        for group in conn.groups:
            held = self.by_group.get(group)
            if held is not None:
                held.discard(conn)
                if not held:
                    del self.by_group[group]

    def close_all(self, reason: Closed) -> None:
        for conn in list(self.conns.values()):
            conn.close(reason)

    async def _receive(self, layer: Any, channel: str) -> None:
        try:
            while True:
                message = await layer.receive(channel)
                for group, item in message.get("items", ()):
                    for conn in self.by_group.get(group, ()):
                        conn.deliver(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("realtime layer receive failed; closing this process's streams", exc_info=True)
            if self.channel == channel:
                self.channel = ""  # the next stream opens a new channel (and reader)
            self.close_all(Closed(TRY_AGAIN, "The realtime layer is unavailable; poll and retry later."))

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
        """Renews every stream's presence; a failed renewal is tried again next beat while the
        entries written last time still hold (they last two beats): one slow Redis answer under
        load must not close, and so reconnect, every stream of the process at once."""
        conns = list(self.conns.values())
        try:
            await refresh_all([c.presence for c in conns if c.presence is not None])
        except Exception:
            lapse = 2 * float(settings.SIGNALBOX_REALTIME["HEARTBEAT_SECONDS"])
            if time.monotonic() - self.refreshed < lapse:
                log.warning("realtime presence refresh failed; trying again next beat", exc_info=True)
                return
            log.warning("realtime presence refresh failed again; closing this process's streams", exc_info=True)
            self.close_all(Closed(TRY_AGAIN, "The realtime layer is unavailable; poll and retry later."))
            return
        self.refreshed = time.monotonic()
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
    if get_channel_layer() is None:
        return Closed(TRY_AGAIN, "The realtime layer is not configured.")
    conn = Conn(principal, stream.groups, int(settings.SIGNALBOX_REALTIME["QUEUE_LIMIT"]))
    the_hub = hub()
    try:
        try:
            async with _gate():  # a reconnect storm queues here rather than exhausting Redis pools
                where = await the_hub.join(conn)
                presence = Presence(conn.conn_id, [*stream.groups, *stream.markers], limits, stream.groups, where)
                if not await presence.enter():
                    raise Refused(429, "too_many_connections", "Too many open streams for this recipient or tenant.")
                conn.presence = presence
        except Refused:
            raise
        except Exception as exc:  # Redis down at connect
            log.warning("realtime layer unavailable at connect", exc_info=True)
            raise Closed(TRY_AGAIN, "The realtime layer is unavailable; poll and retry later.") from exc
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
        the_hub.leave(conn)
        if conn.presence is not None:
            await conn.presence.leave()


_gates: dict[Any, asyncio.Semaphore] = {}


def _gate() -> asyncio.Semaphore:
    """At most 32 streams of this process subscribe at once (per event loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _gates:
        _gates[loop] = asyncio.Semaphore(32)
    return _gates[loop]


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
