"""The correlation context (request id, tenant, ids) shared by logs and the Celery tasks a request causes.

It lives in contextvars so it follows the request in the API and the task in a worker; the
Celery signal handlers in workers/signals.py copy it into task headers and back out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

# The task header the context travels in (written by workers/signals.py, read by the worker's
# `task received` log line in apps/observability/workers.py).
HEADER = "signalbox_context"

_context: ContextVar[dict[str, Any]] = ContextVar("signalbox_context", default={})  # noqa: B039


def current() -> dict[str, Any]:
    return dict(_context.get())


def get(key: str) -> Any:
    return _context.get().get(key)


@contextlib.contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Adds values to the context for the duration of the block."""
    merged = {**_context.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def replace(values: dict[str, Any]) -> None:
    _context.set(dict(values))
