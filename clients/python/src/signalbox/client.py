"""`Client`: the synchronous client, driving the shared calls in `_core` with `httpx.Client`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
from typing_extensions import Unpack

from signalbox import _core
from signalbox.types import (
    CancelResult,
    Event,
    InboxToken,
    Notification,
    NotificationAccepted,
    NotificationSend,
    Page,
    Recipient,
    RecipientFields,
    Task,
)
from signalbox.webhooks import Webhooks

T = TypeVar("T")


class Client:
    """`Client(api_key, base_url)`; both default to `SIGNALBOX_API_KEY` and `SIGNALBOX_URL`.

    Use it as a context manager, or call `close()`, to release its connections.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = _core.settings_from(api_key, base_url, max_retries=max_retries, env=os.environ)
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self.notifications = Notifications(self)
        self.recipients = Recipients(self)
        self.inbox_tokens = InboxTokens(self)
        self.tasks = Tasks(self)
        self.events = Events(self)
        self.webhooks = Webhooks()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _drive(self, flow: _core.Flow[T]) -> T:
        step = next(flow)
        while True:
            try:
                if isinstance(step, _core.Sleep):
                    time.sleep(step.seconds)
                    step = flow.send(None)
                    continue
                try:
                    response = self._http.send(step)
                except httpx.TransportError as exc:
                    step = flow.throw(exc)
                    continue
                step = flow.send(response)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _call(self, call: _core.Call[T]) -> T:
        return self._drive(_core.request_flow(self._settings, call))

    def _iterate(self, path: str, params: dict[str, Any]) -> Iterator[Any]:
        query: dict[str, Any] | None = params
        while query is not None:
            page = self._call(_core.list_call(path, query))
            yield from page.results
            query = page.next_params


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


class Notifications(_Resource):
    def send(self, *, idempotency_key: str | None = None, **body: Unpack[NotificationSend]) -> NotificationAccepted:
        """Queues a notification (202); one Idempotency-Key per call, reused by its retries."""
        return self._client._call(_core.notification_send(dict(body), idempotency_key))

    def get(self, notification_id: str) -> Notification:
        return self._client._call(_core.notification_get(notification_id))

    def list(self, **filters: Any) -> Page[Notification]:
        return self._client._call(_core.list_call("/notifications/", filters))

    def iterate(self, **filters: Any) -> Iterator[Notification]:
        return self._client._iterate("/notifications/", filters)

    def cancel(self, notification_id: str) -> CancelResult:
        return self._client._call(_core.notification_cancel(notification_id))


class Recipients(_Resource):
    def create(
        self, external_id: str, *, idempotency_key: str | None = None, **fields: Unpack[RecipientFields]
    ) -> Recipient:
        call = _core.recipient_create(external_id, dict(fields), idempotency_key)
        return self._client._call(call)

    def upsert(self, external_id: str, **fields: Unpack[RecipientFields]) -> Recipient:
        """Sets these attributes, creating the recipient if it does not exist yet."""
        flow = _core.recipient_upsert_flow(self._client._settings, external_id, dict(fields))
        return self._client._drive(flow)

    def get(self, external_id: str) -> Recipient:
        return self._client._call(_core.recipient_get(external_id))

    def list(self, **filters: Any) -> Page[Recipient]:
        return self._client._call(_core.list_call("/recipients/", filters))

    def iterate(self, **filters: Any) -> Iterator[Recipient]:
        return self._client._iterate("/recipients/", filters)


class InboxTokens(_Resource):
    def mint(self, recipient: str, *, ttl_seconds: int | None = None, idempotency_key: str | None = None) -> InboxToken:
        """A token for this recipient's browser or app: it opens their inbox and nothing else."""
        return self._client._call(_core.inbox_token_mint(recipient, ttl_seconds, idempotency_key))


class Tasks(_Resource):
    def start(
        self,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        scheduled_at: str | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        call = _core.task_start(name, input or {}, scheduled_at, idempotency_key)
        return self._client._call(call)

    def get(self, task_id: str) -> Task:
        return self._client._call(_core.task_get(task_id))

    def list(self, **filters: Any) -> Page[Task]:
        return self._client._call(_core.list_call("/tasks/", filters))

    def iterate(self, **filters: Any) -> Iterator[Task]:
        return self._client._iterate("/tasks/", filters)

    def wait(self, task_id: str, *, timeout: float = 300.0, poll_interval: float | None = None) -> Task:
        """Polls until the task finishes (304s while unchanged); raises `WaitTimeout` after `timeout`."""
        flow = _core.wait_flow(self._client._settings, task_id, timeout=timeout, poll_interval=poll_interval)
        return self._client._drive(flow)

    def cancel(self, task_id: str, *, terminate: bool = False, idempotency_key: str | None = None) -> Task:
        return self._client._call(_core.task_cancel(task_id, terminate, idempotency_key))


class Events(_Resource):
    def emit(
        self,
        type: str,
        payload: dict[str, Any] | None = None,
        *,
        subject: dict[str, Any] | None = None,
        actor: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        """Records a domain event (202); rules and webhooks act on it on the events queue."""
        call = _core.event_emit(_core.event_body(type, payload, subject, actor), idempotency_key)
        return self._client._call(call)
