"""What a provider without an idempotency key accepted in a batch that is not recorded yet.

An SMTP relay answers each message of a batch as it goes, but the pipeline records a request's
outcomes only when the whole request has answered (apps/notifications/services/sending.py). A
worker killed in between would leave messages the relay already accepted marked in flight, and
their retry would send them again. So the adapter notes each acceptance here, in Redis, as soon
as the relay answers it (one `SET` per message, before the next message is sent), and a later
send of the same delivery finds the note and answers "accepted" without a second copy: a crash
repeats at most the one message whose answer and note it came between, as before batching.

The notes of a request are deleted once its outcomes are recorded (the adapter knows: the
pipeline records each request before making the next, and before closing the session), and
expire after `TTL_SECONDS` anyway, which is far beyond a lease and the sweeper's pace.

Redis being an optimisation of safety here, as everywhere (apps/core/redis_client.py): when it
does not answer, `available()` is false and the adapter sends one message per request, each
recorded as answered, as it did before it batched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from apps.core import redis_client

if TYPE_CHECKING:
    import redis

TTL_SECONDS = 24 * 3600


class JournalUnavailable(Exception):
    """Redis did not answer: the journal can neither be read nor written."""


def _key(provider: str, idempotency_key: str) -> str:
    return redis_client.key("sent", provider, idempotency_key)


def _failures(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """Redis's errors and OSError (and `more`), without importing redis-py at start-up."""
    return (*more, *redis_client.errors(), OSError)


def _client() -> redis.Redis:
    conn = redis_client.client()
    if conn is None:
        raise JournalUnavailable("no Redis is configured")
    return conn


def available() -> bool:
    """Whether the journal answers now (a batch that cannot note its acceptances must not start)."""
    try:
        return bool(_client().ping())
    except _failures(JournalUnavailable) as exc:
        redis_client.unavailable("the sent-message journal", exc)
        return False


def accepted(provider: str, idempotency_keys: Sequence[str]) -> dict[str, str]:
    """The keys an earlier, unrecorded send already got accepted, with the provider's message id."""
    if not idempotency_keys:
        return {}
    try:
        values = _client().mget([_key(provider, k) for k in idempotency_keys])
    except _failures() as exc:
        raise JournalUnavailable(str(exc)) from exc
    found = zip(idempotency_keys, values, strict=True)
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in found if v is not None}


def add(provider: str, idempotency_key: str, message_id: str) -> None:
    """Notes that the provider accepted this message (raises JournalUnavailable if it could not)."""
    try:
        _client().set(_key(provider, idempotency_key), message_id or "-", ex=TTL_SECONDS)
    except _failures() as exc:
        raise JournalUnavailable(str(exc)) from exc


def forget(provider: str, idempotency_keys: Iterable[str]) -> None:
    """Drops the notes of recorded messages (best effort: they expire anyway)."""
    keys = [_key(provider, k) for k in idempotency_keys]
    if not keys:
        return
    try:
        _client().delete(*keys)
    except _failures(JournalUnavailable) as exc:
        redis_client.unavailable("forgetting recorded sends", exc)
