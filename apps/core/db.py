"""Surviving a dropped database connection in the middle of background work.

PostgreSQL connections die: a failover, a restart, `pg_terminate_backend`, an idle timeout in a
proxy. A worker that has already called a provider must still record what the provider said,
or the message would be sent again after the lease runs out. `reconnecting(fn)` runs `fn`, and
when the connection turns out to be gone it closes it, waits a little and runs `fn` again on a
new connection, a few times.

Only for work that is safe to repeat (reads, or writes whose conditions make a second run a
no-op) and never inside an open transaction (the transaction died with the connection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

T = TypeVar("T")
CONNECTION_ERRORS = (OperationalError, InterfaceError)


def reconnecting(
    fn: Callable[[], T], *, attempts: int = 4, pause: float = 0.2, before_retry: Callable[[], None] | None = None
) -> T:
    """`fn()`, run again on a fresh connection (up to `attempts` times) when the connection is lost."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except CONNECTION_ERRORS as exc:
            if connection.in_atomic_block or attempt == attempts:
                raise
            log.warning(
                "database connection lost; reconnecting",
                extra={"attempt": attempt, "error": f"{type(exc).__name__}: {exc}"},
            )
            connection.close()
            time.sleep(pause * 2 ** (attempt - 1))
            if before_retry is not None:
                before_retry()
    raise AssertionError("unreachable")
