"""The API rate limit as a sliding window of two counters: no double burst at a window's edge, refused
requests don't count, Retry-After within one window, and one Redis round trip per request."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.cache import caches
from rest_framework.test import APIRequestFactory

from apps.tenancy.throttling import ApiKeyRateThrottle, seconds_until_free, window_hits

REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/15"}}
LOCAL = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


class Clocked(ApiKeyRateThrottle):
    THROTTLE_RATES = {"api_key": "10/min"}
    now = 0.0

    def timer(self) -> float:
        return Clocked.now

    def get_cache_key(self, request: Any, view: Any) -> str:
        return request.META["test_key"]


def hits(key: str, at: float, n: int) -> list[bool]:
    Clocked.now = at
    request = APIRequestFactory().get("/")
    request.META["test_key"] = key
    return [Clocked().allow_request(request, None) for _ in range(n)]


@pytest.fixture(params=["redis", "local"])
def cache_backend(request: Any, settings: Any) -> str:
    settings.CACHES = REDIS if request.param == "redis" else LOCAL
    return str(request.param)


def test_a_full_window_just_before_the_edge_still_counts_just_after_it(cache_backend: str):
    key = f"test:{uuid.uuid4()}"
    start = 600 * 60.0
    assert hits(key, start + 55, 10) == [True] * 10
    # Five seconds into the next window, 11/12 of the last one still overlaps: nothing fits yet.
    assert hits(key, start + 65, 3) == [False] * 3
    # Half-way through it, half of the previous window's ten has slid out.
    assert hits(key, start + 90, 6) == [True] * 5 + [False]


def test_refused_requests_do_not_count(cache_backend: str):
    key = f"test:{uuid.uuid4()}"
    start = 700 * 60.0
    assert hits(key, start + 1, 10) == [True] * 10
    assert hits(key, start + 2, 50) == [False] * 50
    # Had the 50 refusals counted, the next window would still be closed at its middle.
    assert hits(key, start + 60 + 30, 5) == [True] * 5


@pytest.mark.parametrize(
    ("count", "previous", "into"), [(10, 0, 1.0), (10, 10, 59.0), (3, 40, 0.5), (9, 1, 30.0), (10, 1000, 0.0)]
)
def test_retry_after_is_between_one_second_and_one_window(count: int, previous: int, into: float):
    assert 1.0 <= seconds_until_free(count, previous, into, 10, 60) <= 60.0


def test_a_request_costs_one_round_trip_to_redis(settings: Any, monkeypatch: pytest.MonkeyPatch):
    settings.CACHES = REDIS
    client = caches["default"]._cache.get_client(write=True)  # type: ignore[attr-defined]
    sent: list[Any] = []
    connection_class = client.connection_pool.connection_class
    original = connection_class.send_packed_command

    def counting(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(command)
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(connection_class, "send_packed_command", counting)
    window_hits(f"test:{uuid.uuid4()}", 5, 60)  # connects (HELLO, CLIENT …) on first use
    sent.clear()
    count, previous = window_hits(f"test:{uuid.uuid4()}", 5, 60)
    assert (count, previous) == (1, 0)
    assert len(sent) == 1  # INCR, EXPIRE and GET pipelined in one write
