"""Who did something: one small value built once at the edge (a view, an admin action, a task) and
handed to services, which never read the HTTP request.

The stored forms are fixed by rows already written: workflow intents and logs keep `as_dict(scopes=True)`,
an event's `recorded_by` keeps `as_dict()`, and the audit log and task executions keep `record`
(`actor_type`, `actor_id`), in which any key is an `api_key` named by its prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    """`kind` is one of api_key, platform_key, staff, anonymous, system, schedule, task, recipient;
    `id` names it within its kind (a key's prefix, a username, a schedule's id, a system origin)."""

    kind: str
    id: str = ""
    name: str = ""
    scopes: tuple[str, ...] = ()

    @property
    def record(self) -> tuple[str, str]:
        """(actor_type, actor_id) as the audit log and task executions store them."""
        return ("api_key" if self.kind == "platform_key" else self.kind), self.id

    @property
    def ref(self) -> str:
        """`type:id` (or `type` alone without an id), as a `created_by` column stores it."""
        kind, ident = self.record
        return f"{kind}:{ident}" if ident else kind

    def as_dict(self, *, scopes: bool = False) -> dict[str, Any]:
        """`{type, id, name}` (with `scopes`: what a workflow guard checks) as JSON columns store it."""
        shown: dict[str, Any] = {"type": self.kind, "id": self.id, "name": self.name}
        if scopes:
            shown["scopes"] = list(self.scopes)
        return shown

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> Actor:
        """The actor a JSON column holds (`as_dict`), e.g. a workflow intent's, read back."""
        return cls(
            kind=str(stored.get("type") or "system"),
            id=str(stored.get("id") or ""),
            name=str(stored.get("name") or ""),
            scopes=tuple(stored.get("scopes") or ()),
        )


SYSTEM = Actor(kind="system")
"""Signalbox itself, with no more precise origin (the audit log's `system:`)."""
