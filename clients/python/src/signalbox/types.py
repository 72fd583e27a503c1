"""Typed shapes of the main answers and request bodies (plain dicts at run time).

`total=False`: the API may add fields, and a client should not break when it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from typing_extensions import TypedDict

T = TypeVar("T")

TaskStatus = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled", "dead"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "dead"})


class NotificationAccepted(TypedDict, total=False):
    id: str
    status: str
    url: str


class Notification(TypedDict, total=False):
    id: str
    status: str
    template: str | None
    category: str
    channels: list[str]
    priority: str
    topic: str | None
    recipient_count: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    scheduled_at: str | None
    idempotency_key: str
    counts: dict[str, dict[str, int]]
    totals: dict[str, int]
    created_at: str


class CancelResult(TypedDict, total=False):
    notification: Notification
    deliveries_cancelled: int


class NotificationSend(TypedDict, total=False):
    """The body of `notifications.send` (see POST /api/v1/notifications/)."""

    template: str
    content: dict[str, dict[str, str]]
    category: str
    payload: dict[str, Any]
    recipients: list[str | dict[str, Any]]
    topic: str
    channels: list[str]
    priority: str
    scheduled_at: str | None
    dedup_key: str
    dedup_window_seconds: int
    metadata: dict[str, Any]
    digest: dict[str, Any]


class Recipient(TypedDict, total=False):
    external_id: str
    name: str
    email: str
    phone: str
    locale: str
    timezone: str
    chat_address: str
    webhook_url: str
    data: dict[str, Any]
    unsubscribed: bool
    unsubscribed_at: str | None
    has_webhook_secret: bool
    created_at: str
    updated_at: str


class RecipientFields(TypedDict, total=False):
    """Attributes a recipient can be given (all optional; `external_id` comes separately)."""

    name: str
    email: str
    phone: str
    locale: str
    timezone: str
    chat_address: str
    webhook_url: str
    data: dict[str, Any]
    unsubscribed: bool


class TaskProgress(TypedDict, total=False):
    current: int
    total: int | None
    percent: float | None
    message: str


class TaskError(TypedDict, total=False):
    code: str
    message: str


class Task(TypedDict, total=False):
    id: str
    url: str
    name: str
    kind: str
    status: TaskStatus
    input: dict[str, Any]
    progress: TaskProgress
    result: Any
    download_url: str | None
    error: TaskError | None
    attempts: int
    max_attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None


class InboxToken(TypedDict, total=False):
    token: str
    expires_at: str
    recipient: str


class Event(TypedDict, total=False):
    id: str
    type: str
    subject: dict[str, Any] | None
    payload: dict[str, Any]
    status: str
    created_at: str


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; `next_params` are the query parameters of the next page (None on the last)."""

    results: list[T]
    count: int | None = None
    next_params: dict[str, str] | None = field(default=None)
