"""The Python client (clients/python) run from its source against the real API on a live server.

Not installed into the environment (the requirements are hash-locked, which rules out editable
paths): its `src` goes on sys.path here instead, so these tests exercise the files in the repo.
The test task types (apps/tasks/testing.py) are switched on as tests/tasks/conftest.py does, before
the session worker copies the environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ["SIGNALBOX_TEST_TASKS"] = "1"

import apps.tasks.testing  # noqa: F401  (registers the test task types in this process)

SRC = Path(__file__).resolve().parents[2] / "clients" / "python" / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int  # as the client saw it (after any injected failure)


@dataclass
class Wire:
    """What went over the wire, and failures to inject: `fail(predicate, times)` answers 503 for
    matching requests *after* the server handled them (an answer lost on the way back)."""

    seen: list[Seen] = field(default_factory=list)
    failures: list[list[Any]] = field(default_factory=list)

    def fail(self, predicate: Callable[[httpx.Request], bool], times: int = 1, retry_after: str = "0.05") -> None:
        self.failures.append([predicate, times, retry_after])

    def answer(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        for failure in self.failures:
            predicate, times, retry_after = failure
            if times and predicate(request):
                failure[1] -= 1
                response = httpx.Response(
                    503,
                    headers={"Retry-After": retry_after},
                    json={"code": "service_unavailable", "message": "Injected.", "fields": {}},
                )
                break
        self.seen.append(Seen(request.method, request.url.path, dict(request.headers), response.status_code))
        return response

    def requests(self, method: str, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(path_prefix)]


class WireTransport(httpx.BaseTransport):
    def __init__(self, wire: Wire) -> None:
        self.wire, self.inner = wire, httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        return self.wire.answer(request, response)

    def close(self) -> None:
        self.inner.close()


class AsyncWireTransport(httpx.AsyncBaseTransport):
    def __init__(self, wire: Wire) -> None:
        self.wire, self.inner = wire, httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        return self.wire.answer(request, response)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def api_key(tenant: Any) -> str:
    from apps.tenancy.services import api_key_create

    return api_key_create(tenant=tenant, name="python client")[1]


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def sb(live_server: Any, api_key: str, wire: Wire) -> Iterator[Any]:
    from signalbox import Client

    with Client(api_key, live_server.url, transport=WireTransport(wire)) as client:
        yield client


@pytest.fixture
def async_sb(live_server: Any, api_key: str, wire: Wire) -> Callable[[], Any]:
    from signalbox import AsyncClient

    return lambda: AsyncClient(api_key, live_server.url, transport=AsyncWireTransport(wire))
