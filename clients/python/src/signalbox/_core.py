"""The part shared by `Client` and `AsyncClient`: building requests, retries, errors, polling.

Network-free ("sans-IO"): a call is a generator of steps — an `httpx.Request` to send or a `Sleep` —
that receives each answer and returns the result. `Client` drives it with `httpx.Client` and
`time.sleep`, `AsyncClient` with `httpx.AsyncClient` and `asyncio.sleep`, so the retry policy,
the Idempotency-Key rules and `tasks.wait` exist once.
"""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx

from signalbox import __version__
from signalbox.errors import APIConnectionError, WaitTimeout, error_for
from signalbox.types import (
    FINISHED,
    CancelResult,
    Event,
    InboxToken,
    Notification,
    NotificationAccepted,
    Page,
    Recipient,
    Task,
)

T = TypeVar("T")
U = TypeVar("U")

API_PREFIX = "/api/v1"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = httpx.Request | Sleep
Flow = Generator[Step, Any, T]  # sends back an httpx.Response after a request, None after a Sleep


@dataclass(frozen=True)
class Call(Generic[T]):
    """One logical API call; `creates` adds an Idempotency-Key (kept across the call's retries)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    creates: bool = False
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Settings:
    api_key: str
    base_url: str
    max_retries: int = 3
    backoff_base: float = 0.5  # seconds; doubles per retry, with jitter
    backoff_max: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is not waited for: the error is raised
    user_agent: str = f"signalbox-python/{__version__}"

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
        }


def settings_from(api_key: str | None, base_url: str | None, *, max_retries: int, env: Mapping[str, str]) -> Settings:
    key = api_key or env.get("SIGNALBOX_API_KEY", "")
    if not key:
        raise ValueError("Pass api_key, or set SIGNALBOX_API_KEY.")
    url = base_url or env.get("SIGNALBOX_URL", "http://localhost:8000")
    return Settings(api_key=key, base_url=url, max_retries=max_retries)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def build_request(settings: Settings, call: Call[Any], key: str | None) -> httpx.Request:
    headers = {**settings.headers(), **call.headers}
    if key:
        headers["Idempotency-Key"] = key
    params = {k: _param(v) for k, v in (call.params or {}).items() if v is not None}
    return httpx.Request(
        call.method,
        settings.base_url.rstrip("/") + API_PREFIX + call.path,
        params=params,
        json=call.json,
        headers=headers,
    )


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def may_repeat(call: Call[Any], key: str | None) -> bool:
    """A request that cannot do its work twice: an idempotent method, or a create carrying a key."""
    return call.method in SAFE_METHODS or bool(key)


def backoff(settings: Settings, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise error_for(response.status_code, body, dict(response.headers))


def request_flow(settings: Settings, call: Call[T]) -> Flow[T]:
    """Sends `call`, retrying 429, 5xx and connection errors with backoff that honours Retry-After.

    429 is always retried (the server did nothing); a 5xx or a lost connection only when the request
    may be repeated. The Idempotency-Key is made once here, so every retry carries the same key
    and the server answers a repeat with the first answer instead of creating twice.
    """
    key = (call.idempotency_key or str(uuid.uuid4())) if call.creates else None
    request = build_request(settings, call, key)
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield request
        except httpx.TransportError as exc:
            # A refused connection never reached the server: any request may be sent again.
            repeatable = may_repeat(call, key) or isinstance(exc, httpx.ConnectError)
            if attempt >= settings.max_retries or not repeatable:
                raise APIConnectionError(str(exc) or type(exc).__name__, code="connection_error") from exc
            attempt += 1
            yield Sleep(backoff(settings, attempt, None))
            continue
        status = response.status_code
        if status in RETRY_STATUSES and attempt < settings.max_retries and (status == 429 or may_repeat(call, key)):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is None or retry_after <= settings.max_retry_after:
                attempt += 1
                yield Sleep(backoff(settings, attempt, retry_after))
                continue
        raise_for_error(response)
        return call.parse(response)


# --- Parsing ----------------------------------------------------------------------------------------


def json_body(response: httpx.Response) -> Any:
    return response.json() if response.content else None


def page_of(response: httpx.Response) -> Page[Any]:
    """A list answer, whether the endpoint pages by limit/offset (with `count`) or by cursor."""
    body = response.json()
    if isinstance(body, list):  # an unpaginated list
        return Page(results=body)
    following = body.get("next")
    # Only the query of `next` is used: its host is what the server saw, which behind a proxy may
    # not be the address this client uses.
    next_params = dict(parse_qsl(urlsplit(following).query, keep_blank_values=True)) if following else None
    return Page(results=list(body.get("results", [])), count=body.get("count"), next_params=next_params)


# --- Calls (one builder per endpoint, used by both clients) --------------------------------------------


def list_call(path: str, params: dict[str, Any]) -> Call[Page[Any]]:
    return Call("GET", path, page_of, params=params)


def notification_send(body: dict[str, Any], key: str | None) -> Call[NotificationAccepted]:
    return Call("POST", "/notifications/", json_body, json=body, creates=True, idempotency_key=key)


def notification_get(notification_id: str) -> Call[Notification]:
    return Call("GET", f"/notifications/{notification_id}/", json_body)


def notification_cancel(notification_id: str) -> Call[CancelResult]:
    return Call("POST", f"/notifications/{notification_id}/cancel/", json_body)


def recipient_create(external_id: str, fields: dict[str, Any], key: str | None) -> Call[Recipient]:
    body = {**fields, "external_id": external_id}
    return Call("POST", "/recipients/", json_body, json=body, creates=True, idempotency_key=key)


def recipient_get(external_id: str) -> Call[Recipient]:
    return Call("GET", f"/recipients/{external_id}/", json_body)


def recipient_update(external_id: str, fields: dict[str, Any]) -> Call[Recipient]:
    # PATCH sets the given attributes to the given values: repeating it changes nothing more.
    return Call("PATCH", f"/recipients/{external_id}/", json_body, json=fields)


def recipient_upsert_flow(settings: Settings, external_id: str, fields: dict[str, Any]) -> Flow[Recipient]:
    """Update, or create when absent; a create lost to a concurrent one (409) becomes the update."""
    from signalbox.errors import Conflict, NotFound

    try:
        return (yield from request_flow(settings, recipient_update(external_id, fields)))
    except NotFound:
        pass
    try:
        return (yield from request_flow(settings, recipient_create(external_id, fields, None)))
    except Conflict:
        return (yield from request_flow(settings, recipient_update(external_id, fields)))


def inbox_token_mint(external_id: str, ttl_seconds: int | None, key: str | None) -> Call[InboxToken]:
    body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
    path = f"/recipients/{external_id}/inbox-token/"
    return Call("POST", path, json_body, json=body, creates=True, idempotency_key=key)


def task_start(name: str, input: dict[str, Any], scheduled_at: str | None, key: str | None) -> Call[Task]:
    body: dict[str, Any] = {"name": name, "input": input}
    if scheduled_at is not None:
        body["scheduled_at"] = scheduled_at
    return Call("POST", "/tasks/", json_body, json=body, creates=True, idempotency_key=key)


def task_get(task_id: str) -> Call[Task]:
    return Call("GET", f"/tasks/{task_id}/", json_body)


def task_cancel(task_id: str, terminate: bool, key: str | None) -> Call[Task]:
    body = {"terminate": terminate}
    return Call("POST", f"/tasks/{task_id}/cancel/", json_body, json=body, creates=True, idempotency_key=key)


def event_emit(body: dict[str, Any], key: str | None) -> Call[Event]:
    return Call("POST", "/events/", json_body, json=body, creates=True, idempotency_key=key)


def event_body(
    type: str, payload: dict[str, Any] | None, subject: dict[str, Any] | None, actor: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type, "payload": payload or {}}
    if subject is not None:
        body["subject"] = subject
    if actor is not None:
        body["actor"] = actor
    return body


@dataclass(frozen=True)
class Poll:
    """One poll of a task: `task` is None when the answer was 304 (unchanged since `etag`)."""

    task: Task | None
    etag: str | None
    retry_after: float | None


def _poll(response: httpx.Response) -> Poll:
    task = None if response.status_code == 304 else response.json()
    return Poll(task, response.headers.get("ETag"), parse_retry_after(response.headers.get("Retry-After")))


def wait_flow(settings: Settings, task_id: str, *, timeout: float, poll_interval: float | None) -> Flow[Task]:
    """Polls a task until it finishes, sending the last ETag so an unchanged task costs a 304.

    Waits between polls as the server's Retry-After says (or `poll_interval`), never past `timeout`.
    """
    deadline = time.monotonic() + timeout
    task: Task | None = None
    etag: str | None = None
    while True:
        headers = {"If-None-Match": etag} if etag and task is not None else {}
        poll: Poll = yield from request_flow(settings, Call("GET", f"/tasks/{task_id}/", _poll, headers=headers))
        if poll.task is not None:
            task, etag = poll.task, poll.etag
        assert task is not None  # a 304 only answers an If-None-Match, sent only once a task was seen
        if task.get("status") in FINISHED:
            return task
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"Task {task_id} is still {task.get('status')} after {timeout}s.", task=task)
        pause = poll_interval if poll_interval is not None else (poll.retry_after or 1.0)
        yield Sleep(min(pause, remaining))
