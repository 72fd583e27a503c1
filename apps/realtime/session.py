"""One open stream, whatever its transport: subscribe, replay, then the live feed, until it ends.

Order at the seam: the connection joins its groups *before* reading the backlog, so a change
committed meanwhile is both replayed and queued live; the live copy is dropped by id. Layer
messages go into a per-connection queue of at most QUEUE_LIMIT; a client too slow to drain it is
closed (4008) and resumes from its cursor. A failing layer or Redis closes the stream (1013).
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

from apps.realtime.auth import Principal, Refused
from apps.realtime.db import database_sync_to_async
from apps.realtime.presence import Presence
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


async def run(
    *,
    stream: Stream,
    principal: Principal,
    recheck: Callable[[], Principal],
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
    presence = Presence(uuid.uuid4().hex, stream.groups, limits)
    queue: asyncio.Queue[Any] = asyncio.Queue()
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
        reader = asyncio.create_task(_read(layer, channel, queue, int(cfg["QUEUE_LIMIT"])))
        for message in await stream.start(cursor):
            await send(message)
        await _flush(stream, send)
        if stream.final:
            return Closed(NORMAL, "final")
        return await _loop(stream, principal, recheck, presence, queue, send, draining)
    except Refused as exc:
        return Closed(exc.close_code, exc.message) if exc.status != 409 else Closed(REPLAY_TOO_LONG, exc.message)
    except Closed as exc:
        return exc
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
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


async def _loop(
    stream: Stream,
    principal: Principal,
    recheck: Callable[[], Principal],
    presence: Presence,
    queue: asyncio.Queue[Any],
    send: Send,
    draining: asyncio.Event,
) -> Closed:
    cfg = settings.SIGNALBOX_REALTIME
    heartbeat = float(cfg["HEARTBEAT_SECONDS"])
    refresh_every = float(cfg["STATE_REFRESH_SECONDS"])
    auth_every = float(cfg["AUTH_RECHECK_SECONDS"])
    now = time.monotonic()
    next_beat, next_refresh, next_auth = now + heartbeat, now + refresh_every, now + auth_every
    while True:
        if draining.is_set():
            return Closed(RESTART, "reconnect")
        if principal.expires_at is not None and principal.expires_at <= timezone.now():
            return Closed(UNAUTHORIZED, "The token or key has expired.")
        now = time.monotonic()
        wake = min(next_beat, next_auth, next_refresh if stream.refreshes else next_beat)
        if principal.expires_at is not None:
            wake = min(wake, now + max((principal.expires_at - timezone.now()).total_seconds(), 0) + 0.01)
        try:
            item = await asyncio.wait_for(queue.get(), timeout=max(wake - now, 0.01))
        except TimeoutError:
            item = None
        while item is not None:
            if isinstance(item, Closed):
                return item
            for message in await stream.live(item):
                await send(message)
            item = None if queue.empty() else queue.get_nowait()
        now = time.monotonic()
        if stream.refreshes and now >= next_refresh:
            next_refresh = now + refresh_every
            for message in await stream.refresh():
                await send(message)
        await _flush(stream, send)
        if stream.final:
            return Closed(NORMAL, "final")
        if now >= next_beat:
            next_beat = now + heartbeat
            try:
                await presence.refresh()
            except Exception:
                return Closed(TRY_AGAIN, "The realtime layer is unavailable; poll and retry later.")
            await send({"type": "heartbeat"})
        if now >= next_auth:
            next_auth = now + auth_every
            try:
                principal = await database_sync_to_async(recheck)()
            except Refused as exc:
                return Closed(UNAUTHORIZED, exc.message)
