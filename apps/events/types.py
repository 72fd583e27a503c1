"""Event types: their shape, the namespaces Signalbox reserves, and pattern matching (`order.*`, `*`);
and the shape of an event's subject and of the actor a client names."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from apps.core.errors import Unprocessable

TYPE_PATTERN = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+){0,9}$")
PATTERN_PATTERN = re.compile(r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+){0,9}(\.\*)?)$")
MAX_TYPE_LENGTH = 200

# Types in these namespaces are Signalbox's own (event_emit); clients cannot forge them.
RESERVED_PREFIXES = ("notification.", "delivery.", "task.", "transition.", "endpoint.", "webhook.", "workflow.")
# Actor types Signalbox records itself (the calling key, staff, Signalbox); a client cannot claim them.
RESERVED_ACTOR_TYPES = ("api_key", "platform_key", "staff", "system")
ACTOR_TYPE_PATTERN = re.compile(r"^[a-z0-9_.-]{1,64}$")
MAX_ACTOR_ID_LENGTH = 200


class InvalidEventType(Unprocessable):
    code = "invalid_event_type"


def check_type(event_type: Any, *, reserved_allowed: bool) -> str:
    if not isinstance(event_type, str) or len(event_type) > MAX_TYPE_LENGTH or not TYPE_PATTERN.match(event_type):
        raise InvalidEventType(
            "An event type is dotted lower-case words, e.g. order.paid.", fields={"type": ["Invalid event type."]}
        )
    if not reserved_allowed and event_type.startswith(RESERVED_PREFIXES):
        raise Unprocessable(
            f"{event_type!r} is in a namespace Signalbox reserves for its own events.",
            code="reserved_event_type",
            fields={"type": [f"Reserved prefixes: {', '.join(RESERVED_PREFIXES)}"]},
        )
    return event_type


def check_pattern(pattern: Any, *, field: str = "event_type") -> str:
    if not isinstance(pattern, str) or len(pattern) > MAX_TYPE_LENGTH or not PATTERN_PATTERN.match(pattern):
        raise InvalidEventType(
            "An event type pattern is a type, a prefix ending in .* (order.*), or *.",
            fields={field: [f"Invalid pattern {pattern!r}."]},
        )
    return pattern


def type_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def any_matches(patterns: Iterable[str], event_type: str) -> bool:
    return any(type_matches(p, event_type) for p in patterns)


def subject_of(subject: Any) -> tuple[str, str]:
    """(type, id) from `{"type", "id"}`, a `(type, id)` pair, or a model instance (its model name and pk)."""
    if subject is None:
        return "", ""
    if isinstance(subject, Mapping):
        return str(subject.get("type") or ""), str(subject.get("id") or "")
    if isinstance(subject, (tuple, list)) and len(subject) == 2:
        return str(subject[0]), str(subject[1])
    meta = getattr(subject, "_meta", None)
    if meta is not None:
        return str(meta.model_name), str(subject.pk)
    raise TypeError(f"Cannot take an event subject from {type(subject).__name__}.")


def check_actor(actor: Any) -> dict[str, str]:
    """A client's actor: exactly `{"type", "id"}`, a short lower-case type and a non-empty id."""
    problem = ""
    if not isinstance(actor, Mapping) or set(actor) != {"type", "id"}:
        problem = 'An object with exactly "type" and "id", e.g. {"type": "user", "id": "u-7"}.'
    elif not isinstance(actor["type"], str) or not ACTOR_TYPE_PATTERN.match(actor["type"]):
        problem = "type: 1 to 64 lower-case letters, digits, '_', '-' or '.'."
    elif actor["type"] in RESERVED_ACTOR_TYPES:
        problem = f"type: {', '.join(RESERVED_ACTOR_TYPES)} are recorded by Signalbox, not named by clients."
    elif not isinstance(actor["id"], str) or not actor["id"].strip() or len(actor["id"]) > MAX_ACTOR_ID_LENGTH:
        problem = f"id: a non-empty string of at most {MAX_ACTOR_ID_LENGTH} characters."
    if problem:
        raise Unprocessable("The actor is invalid.", code="invalid_actor", fields={"actor": [problem]})
    return {"type": actor["type"], "id": actor["id"]}
