"""Database calls from the event loop, on a pool of threads rather than Channels' single one.

Channels' `database_sync_to_async` is thread-sensitive by default: every query of every stream
would wait for one thread. Stream queries are independent reads, so they run on the default
executor (ASGI_THREADS threads, each with its own connection, closed when old like a request's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async as _channels_db


def database_sync_to_async(func: Callable[..., Any]) -> Any:
    return _channels_db(func, thread_sensitive=False)
