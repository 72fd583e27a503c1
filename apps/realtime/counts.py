"""Inbox counts for many streams in one query.

When a fan-out puts an item in 10,000 inboxes whose streams live in one process, each stream owes
its client the new unread/unseen counts. Read one by one that is 10,000 queries in a burst; here the
streams' requests within one short window (`WINDOW`) are answered together, by one grouped query
per `CHUNK` recipients. A request arriving while a query runs waits for the next one, so every
answer was read after the change that asked for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from apps.notifications.services import inbox
from apps.realtime.db import database_sync_to_async

WINDOW = 0.02  # seconds a first request waits for others: one fan-out's messages reach the streams within it
CHUNK = 1000  # recipients per query

Counts = dict[str, int]
Query = Callable[[Iterable[tuple[Any, Any]]], dict[Any, Counts]]


class CountsBatcher:
    """Coalesces `counts(recipient_pk, tenant_id)` calls of one event loop."""

    def __init__(self, query: Query = inbox.inbox_counts_many, window: float = WINDOW, chunk: int = CHUNK) -> None:
        self.query = query
        self.window = window
        self.chunk = chunk
        self.pending: dict[Any, tuple[Any, list[asyncio.Future[Counts]]]] = {}
        self.flushing: asyncio.Task[None] | None = None

    async def counts(self, recipient_pk: Any, tenant_id: Any) -> Counts:
        waiter: asyncio.Future[Counts] = asyncio.get_running_loop().create_future()
        self.pending.setdefault(recipient_pk, (tenant_id, []))[1].append(waiter)
        if self.flushing is None:
            self.flushing = asyncio.create_task(self._flush())
        return await waiter

    async def _flush(self) -> None:
        await asyncio.sleep(self.window)
        taken, self.pending, self.flushing = self.pending, {}, None  # later requests start the next flush
        items = list(taken.items())
        for start in range(0, len(items), self.chunk):
            chunk = items[start : start + self.chunk]
            try:
                found = await database_sync_to_async(self.query)([(pk, tenant_id) for pk, (tenant_id, _) in chunk])
            except Exception as exc:  # the streams that asked close as on any failed query of theirs
                for _, (_, waiters) in items[start:]:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                return
            for pk, (_, waiters) in chunk:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(found[pk])


_batchers: dict[Any, CountsBatcher] = {}


def batcher() -> CountsBatcher:
    """This event loop's batcher (one per process in production)."""
    loop = asyncio.get_running_loop()
    if loop not in _batchers:
        _batchers[loop] = CountsBatcher()
    return _batchers[loop]
