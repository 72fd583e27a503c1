"""The `LiveSink` the realtime app registers in apps.core.live: publishes to the Channels layer.

Publishes run on one event loop per process, in a daemon thread started on first use (and again in
a forked child, e.g. a Celery prefork worker): the layer keeps its Redis connections per event
loop, so a loop per publish (`async_to_sync`) would open a new Redis connection every time. The
groups of one batch are sent concurrently.

The layer and the Redis clients are made on first use, not at start-up: a process that never
publishes (a management command, the API before its first change) does not load redis-py, nor
what redis-py loads with it (OpenTelemetry).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence

from channels.layers import get_channel_layer

from apps.core.live import Message
from apps.core.redis_client import errors
from apps.realtime import presence

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 5.0  # seconds a writer waits for its publish; past it the stream resumes from the database


class _Loop:
    """A private event loop in a daemon thread, per process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="live-publish", daemon=True).start()


_loop: _Loop | None = None
_lock = threading.Lock()


def _publisher() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.pid != os.getpid():
            _loop = _Loop()
        return _loop.loop


class ChannelLayerSink:
    def listening(self, groups: Sequence[str]) -> set[str]:
        return presence.listening(list(groups))

    def publish(self, messages: Sequence[Message]) -> None:
        """Sends the batch and waits for it (bounded); a failure is logged, never raised: the
        change is committed, and a stream that missed it reads it back on reconnect."""
        try:
            future = asyncio.run_coroutine_threadsafe(_send_all(list(messages)), _publisher())
            future.result(timeout=PUBLISH_TIMEOUT)
        except Exception:
            log.warning("live publish failed; streams will replay from the database", exc_info=True)


async def _send_all(messages: list[Message]) -> None:
    """One layer message per realtime process holding streams of these groups (`presence.routes`),
    carrying all of the batch's messages for them, in order: a process receives a fan-out chunk
    in one layer message, not one per recipient."""
    layer = get_channel_layer()
    retryable: tuple[type[Exception], ...] = (ConnectionError, OSError, *errors())
    assert layer is not None
    groups = list(dict.fromkeys(group for group, _ in messages))
    routes = await asyncio.to_thread(presence.routes, groups)

    async def send(channel: str, routed: list[str]) -> None:
        wanted = set(routed)
        batch = {"type": "live.batch", "items": [[group, message] for group, message in messages if group in wanted]}
        try:
            await layer.send(channel, batch)
        except retryable:
            # A pooled connection that Redis closed (a restart) fails once, then is replaced. At worst
            # a client gets an item twice, which it upserts by id (state streams drop it by id).
            await layer.send(channel, batch)

    await asyncio.gather(*(send(channel, routed) for channel, routed in routes.items()))
