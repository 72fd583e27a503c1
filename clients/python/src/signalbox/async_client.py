"""`AsyncClient`: the asyncio client, driving the shared calls in `_core` with `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
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


class AsyncClient:
    """`AsyncClient(api_key, base_url)`: `Client`'s API with `await`, and `async for` over lists.

    Use it as an async context manager, or `await aclose()`, to release its connections.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = _core.settings_from(api_key, base_url, max_retries=max_retries, env=os.environ)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self.notifications = AsyncNotifications(self)
        self.recipients = AsyncRecipients(self)
        self.inbox_tokens = AsyncInboxTokens(self)
        self.tasks = AsyncTasks(self)
        self.events = AsyncEvents(self)
        self.webhooks = Webhooks()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _drive(self, flow: _core.Flow[T]) -> T:
        step = next(flow)
        while True:
            try:
                if isinstance(step, _core.Sleep):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                    continue
                try:
                    response = await self._http.send(step)
                except httpx.TransportError as exc:
                    step = flow.throw(exc)
                    continue
                step = flow.send(response)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def _call(self, call: _core.Call[T]) -> T:
        return await self._drive(_core.request_flow(self._settings, call))

    async def _iterate(self, path: str, params: dict[str, Any]) -> AsyncIterator[Any]:
        query: dict[str, Any] | None = params
        while query is not None:
            page = await self._call(_core.list_call(path, query))
            for item in page.results:
                yield item
            query = page.next_params


class _AsyncResource:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client


class AsyncNotifications(_AsyncResource):
    async def send(
        self, *, idempotency_key: str | None = None, **body: Unpack[NotificationSend]
    ) -> NotificationAccepted:
        return await self._client._call(_core.notification_send(dict(body), idempotency_key))

    async def get(self, notification_id: str) -> Notification:
        return await self._client._call(_core.notification_get(notification_id))

    async def list(self, **filters: Any) -> Page[Notification]:
        return await self._client._call(_core.list_call("/notifications/", filters))

    def iterate(self, **filters: Any) -> AsyncIterator[Notification]:
        return self._client._iterate("/notifications/", filters)

    async def cancel(self, notification_id: str) -> CancelResult:
        return await self._client._call(_core.notification_cancel(notification_id))


class AsyncRecipients(_AsyncResource):
    async def create(
        self, external_id: str, *, idempotency_key: str | None = None, **fields: Unpack[RecipientFields]
    ) -> Recipient:
        return await self._client._call(_core.recipient_create(external_id, dict(fields), idempotency_key))

    async def upsert(self, external_id: str, **fields: Unpack[RecipientFields]) -> Recipient:
        flow = _core.recipient_upsert_flow(self._client._settings, external_id, dict(fields))
        return await self._client._drive(flow)

    async def get(self, external_id: str) -> Recipient:
        return await self._client._call(_core.recipient_get(external_id))

    async def list(self, **filters: Any) -> Page[Recipient]:
        return await self._client._call(_core.list_call("/recipients/", filters))

    def iterate(self, **filters: Any) -> AsyncIterator[Recipient]:
        return self._client._iterate("/recipients/", filters)


class AsyncInboxTokens(_AsyncResource):
    async def mint(
        self, recipient: str, *, ttl_seconds: int | None = None, idempotency_key: str | None = None
    ) -> InboxToken:
        return await self._client._call(_core.inbox_token_mint(recipient, ttl_seconds, idempotency_key))


class AsyncTasks(_AsyncResource):
    async def start(
        self,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        scheduled_at: str | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        return await self._client._call(_core.task_start(name, input or {}, scheduled_at, idempotency_key))

    async def get(self, task_id: str) -> Task:
        return await self._client._call(_core.task_get(task_id))

    async def list(self, **filters: Any) -> Page[Task]:
        return await self._client._call(_core.list_call("/tasks/", filters))

    def iterate(self, **filters: Any) -> AsyncIterator[Task]:
        return self._client._iterate("/tasks/", filters)

    async def wait(self, task_id: str, *, timeout: float = 300.0, poll_interval: float | None = None) -> Task:
        flow = _core.wait_flow(self._client._settings, task_id, timeout=timeout, poll_interval=poll_interval)
        return await self._client._drive(flow)

    async def cancel(self, task_id: str, *, terminate: bool = False, idempotency_key: str | None = None) -> Task:
        return await self._client._call(_core.task_cancel(task_id, terminate, idempotency_key))


class AsyncEvents(_AsyncResource):
    async def emit(
        self,
        type: str,
        payload: dict[str, Any] | None = None,
        *,
        subject: dict[str, Any] | None = None,
        actor: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Event:
        call = _core.event_emit(_core.event_body(type, payload, subject, actor), idempotency_key)
        return await self._client._call(call)
