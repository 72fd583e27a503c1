"""Who listens, and how many connections each recipient and tenant holds, in Redis with expiry.

A stream takes its entries when it opens (`Presence.enter`) and drops them when it ends; while it
is open, the process refreshes the entries of all its streams at once every heartbeat
(`refresh_all`, one pipeline). A crashed process's entries expire after two heartbeats, so counts
heal by themselves. `listening` lets publishers skip groups nobody follows (it may over-answer for
a moment after a disconnect, which only costs an unneeded publish).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.core.redis_client import errors, key

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis


def _cfg() -> dict[str, Any]:
    return dict(settings.SIGNALBOX_REALTIME)


def _ttl() -> float:
    return 2 * float(_cfg()["HEARTBEAT_SECONDS"]) + 1


LISTEN = "rt:listen"
ROUTE = "rt:route"  # per group: the layer channels of the processes holding a stream of it


@functools.cache
def sync_client(url: str) -> redis.Redis:
    import redis  # late: redis-py loads OpenTelemetry with it (apps/core/redis_client.py)

    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def listening(groups: list[str]) -> set[str]:
    """The groups with a live listener (one ZMSCORE)."""
    scores = sync_client(_cfg()["REDIS_URL"]).zmscore(key(LISTEN), groups)
    now = time.time()
    return {g for g, score in zip(groups, scores, strict=True) if score is not None and float(score) > now}


def routes(groups: list[str]) -> dict[str, list[str]]:
    """Which processes (layer channels) hold streams of these groups: channel -> its groups (one
    pipeline). Publishers send one layer message per process and batch, not one per group."""
    client = sync_client(_cfg()["REDIS_URL"])
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for group in groups:
        pipe.zrangebyscore(key(ROUTE, group), now, "+inf")
    found: dict[str, list[str]] = {}
    for group, channels in zip(groups, pipe.execute(), strict=True):
        for channel in channels:
            found.setdefault(channel.decode(), []).append(group)
    return found


_clients: dict[Any, aioredis.Redis] = {}


def _async_client() -> aioredis.Redis:
    """One pooled client per event loop, shared by every stream of the process."""
    import redis.asyncio as aioredis  # late, as in sync_client

    loop = asyncio.get_running_loop()
    if loop not in _clients:
        pool = aioredis.BlockingConnectionPool.from_url(
            _cfg()["REDIS_URL"], max_connections=128, timeout=10, socket_timeout=2, socket_connect_timeout=1
        )
        _clients[loop] = aioredis.Redis(connection_pool=pool)
    return _clients[loop]


class Presence:
    """One connection's entries: its groups, and its slot under the recipient's and tenant's limits."""

    def __init__(
        self, conn_id: str, groups: list[str], limits: list[tuple[str, int]], routed: list[str], where: str
    ) -> None:
        self.conn_id = conn_id
        self.groups = groups  # listened: the stream's groups, and markers such as `notifications.<tenant>`
        self.limits = limits  # (counter name, max)
        self.routed = routed  # the groups whose messages this process receives for the stream
        self.where = where  # this process's layer channel
        self.client = _async_client()
        self.left = False

    async def enter(self) -> bool:
        """Takes a slot under every limit and writes its routes and listeners, in one round trip;
        False (and its slots given back) when a limit is full. A refused stream's routes and
        listeners stay until they expire: a publisher may send to it for a while, which costs only
        an unneeded message."""
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        for name, _ in self.limits:
            pipe.zremrangebyscore(key("rt:conn", name), "-inf", now)
            pipe.zadd(key("rt:conn", name), {self.conn_id: now + _ttl()})
            pipe.zcard(key("rt:conn", name))
        _renew(pipe, [self], now + _ttl())
        results = await pipe.execute()
        counts = results[2 : 3 * len(self.limits) : 3]
        if any(count > limit for count, (_, limit) in zip(counts, self.limits, strict=True)):
            await self.leave()
            return False
        return True

    async def refresh(self) -> None:
        await refresh_all([self])

    async def leave(self) -> None:
        if self.left:
            return
        self.left = True
        gone: tuple[type[Exception], ...] = (*errors(), OSError)
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, _ in self.limits:
                pipe.zrem(key("rt:conn", name), self.conn_id)
            await pipe.execute()
        except gone:
            pass  # expires by itself


async def refresh_all(presences: list[Presence], chunk: int = 2000) -> None:
    """Renews the entries of many streams in one pipeline per `chunk` of them (a process's
    heartbeat); raises when Redis is unreachable (the caller closes its streams 1013)."""
    if not presences:
        return
    client = presences[0].client
    now = time.time()
    expires = now + _ttl()
    for start in range(0, len(presences), chunk):
        pipe = client.pipeline(transaction=False)
        _renew(pipe, presences[start : start + chunk], expires)
        await pipe.execute()
    # Groups nobody refreshed for a while (their streams ended) leave the listeners' set.
    await client.zremrangebyscore(key(LISTEN), "-inf", now - _ttl())


def _renew(pipe: Any, presences: list[Presence], expires: float) -> None:
    """Queues the commands that renew these streams' slots, routes and listeners until `expires`."""
    members: dict[str, dict[str, float]] = {}
    groups: dict[str, float] = {}
    for presence in presences:
        for name, _ in presence.limits:
            members.setdefault(name, {})[presence.conn_id] = expires
        groups.update(dict.fromkeys(presence.groups, expires))
    for name, entries in members.items():
        pipe.zadd(key("rt:conn", name), entries)
        pipe.expire(key("rt:conn", name), int(_ttl()) + 1)
    routes: dict[str, dict[str, float]] = {}
    for presence in presences:
        for group in presence.routed:
            routes.setdefault(group, {})[presence.where] = expires
    for group, channels in routes.items():
        pipe.zadd(key(ROUTE, group), channels, gt=True)
        pipe.expire(key(ROUTE, group), int(_ttl()) + 1)
    # Listeners last: a publisher that sees a group listened finds its routes already written.
    if groups:
        pipe.zadd(key(LISTEN), groups, gt=True)
