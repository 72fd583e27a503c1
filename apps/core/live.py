"""The port through which domain apps announce live changes, without knowing who listens.

Notifications and tasks call `live_publish_on_commit(...)` after writing a change; the realtime
app (`apps/realtime`) registers a `LiveSink` at start-up that puts the messages on the Channels
layer. With no sink registered (the app not installed, no Redis) every call is a no-op, so the
domain never depends on the realtime process being there.

Messages are published only after the surrounding transaction commits: PostgreSQL stays the
source of truth, and a stream that missed a message reads it back from the database.

Who listens is asked **after** the commit (`live_publish_to_listeners`), never inside the writing
transaction: a stream registers as a listener before it reads its backlog, so a listener that
appears after the question reads the committed change from the database, and one that was there
before it is sent the message. Asked inside the transaction, a stream opening between the
question and the commit would get neither (docs/realtime.md, "Resume").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from django.db import transaction

log = logging.getLogger(__name__)

Message = tuple[str, dict[str, Any]]  # (group, JSON-able message)


class LiveSink(Protocol):
    def listening(self, groups: Sequence[str]) -> set[str]:
        """Which of these groups have at least one open stream (may over-answer, never under)."""
        ...

    def publish(self, messages: Sequence[Message]) -> None:
        """Sends each message to its group; must not raise."""
        ...


_sink: LiveSink | None = None


def live_register(sink: LiveSink | None) -> None:
    global _sink
    _sink = sink


def live_listening(groups: Iterable[str]) -> set[str]:
    """The groups someone listens to; empty when no sink is registered, so callers skip the work."""
    wanted = list(groups)
    if _sink is None or not wanted:
        return set()
    try:
        return _sink.listening(wanted)
    except Exception:  # a down Redis: nobody can be listening through it either
        log.warning("live listeners lookup failed", exc_info=True)
        return set()


def live_publish_on_commit(messages: Sequence[Message], *, using: str | None = None) -> None:
    """Publishes `(group, message)` pairs once the current transaction commits (now, outside one)."""
    sink = _sink
    if sink is None or not messages:
        return
    batch = list(messages)
    transaction.on_commit(lambda: sink.publish(batch), using=using)


def live_publish_to_listeners(
    groups: Iterable[str],
    build: Callable[[set[str]], Sequence[Message]],
    *,
    using: str | None = None,
    gate: str | None = None,
) -> None:
    """Once the current transaction commits (now, outside one): asks which of `groups` someone
    listens to (one Redis lookup) and, only if any, publishes `build(listened groups)`, built then,
    so it reads the committed state. Nothing is read when nobody listens. A failing build is
    logged, never raised: the change is committed, and streams read it on reconnect.

    `gate`: a marker group every stream of these groups also listens to (registered with its own
    groups, in the same write), asked first: when nobody listens to it, the groups themselves (a
    fan-out chunk's thousands of inboxes) are not asked at all. Asked after the commit like them,
    so the seam argument above holds for it too."""
    sink = _sink
    wanted = list(dict.fromkeys(groups))
    if sink is None or not wanted:
        return

    def publish() -> None:
        if gate is not None and not live_listening([gate]):
            return
        listened = live_listening(wanted)
        if not listened:
            return
        try:
            messages = list(build(listened))
        except Exception:
            log.warning("live message build failed", exc_info=True)
            return
        if messages:
            sink.publish(messages)

    transaction.on_commit(publish, using=using)
