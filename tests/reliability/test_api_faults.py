"""Faults at the API's edge: a request rate limit that answers 429 with Retry-After (and holds
across processes with a Redis cache), racing Idempotency-Key requests, a database connection
dropped under a request (503 JSON, not a 500 page), and a request that rolls back (nothing queued)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from rest_framework.test import APIClient

from apps.notifications import tasks
from apps.notifications.models import Delivery, Notification
from apps.notifications.services.dispatch import sweep
from apps.notifications.services.notifications import notification_create
from apps.tenancy.throttling import ApiKeyRateThrottle
from tests.conftest import ROOT, client_for, worker_env
from tests.reliability.conftest import far_future

BODY: dict[str, Any] = {
    "content": {"sms": {"text": "Order {{ order }} shipped."}},
    "payload": {"order": "A-7"},
    "recipients": [{"external_id": "ada", "phone": "+14155550100"}],
}


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Records publishes instead of sending them (the session worker, if any, never sees these rows)."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for task in (tasks.fan_out, tasks.fan_out_chunk, tasks.send_batch):
        monkeypatch.setattr(
            task, "apply_async", lambda args=(), task=task, **kw: calls.append((task.name, tuple(args)))
        )
    return calls


def test_an_api_key_over_its_rate_gets_429_with_retry_after(api: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    cache.clear()

    answers = [api.get("/api/v1/notifications/") for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json()["code"] == "throttled" and refused.json()["fields"] == {}
    assert 0 < int(refused["Retry-After"]) <= 60


@pytest.mark.django_db(transaction=True)
def test_with_a_redis_cache_the_rate_limit_holds_across_processes(tenant: Any, settings: Any, monkeypatch: Any):
    # A database of its own: the broker's (0) is shared with other workers' queues.
    url = "redis://127.0.0.1:6379/15"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    here = client_for(tenant)
    assert [here.get("/api/v1/notifications/").status_code for _ in range(3)] == [200, 200, 200]

    # Another process (another API replica), same key, same CACHE_URL: the fourth request is refused
    script = (
        "import json, django; django.setup()\n"
        "from rest_framework.test import APIClient\n"
        "c = APIClient(); c.credentials(HTTP_AUTHORIZATION='Bearer ' + __import__('sys').argv[1])\n"
        "r = c.get('/api/v1/notifications/', HTTP_HOST='localhost')\n"
        "print(json.dumps({'status': r.status_code, 'retry_after': r.get('Retry-After'), 'body': r.json()}))\n"
    )
    env = worker_env(CACHE_URL=url, API_RATE_LIMIT="3/min")
    key: str = here.api_key  # type: ignore[attr-defined]
    done = subprocess.run(
        [sys.executable, "-c", script, key], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 429 and answer["body"]["code"] == "throttled" and int(answer["retry_after"]) > 0
    window = int(time.time() // 60)  # only this test's counters; never FLUSHDB a shared Redis
    cache.delete_many([f"throttle:key:{key.partition('.')[0]}:{w}" for w in (window - 1, window)])


def race(requests: list[tuple[APIClient, dict[str, Any]]], key: str) -> list[Any]:
    answers: list[Any] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def post(slot: int) -> None:
        client, body = requests[slot]
        barrier.wait()
        try:
            answers[slot] = client.post("/api/v1/notifications/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_idempotency_key_make_one_intent(tenant: Any, published: list[Any]):
    clients = [client_for(tenant) for _ in range(3)]

    same = race([(c, BODY) for c in clients], "order-7")
    different = race([(clients[0], BODY), (clients[1], {**BODY, "payload": {"order": "B-8"}})], "order-8")

    assert [a.status_code for a in same] == [202, 202, 202]
    assert len({a.json()["id"] for a in same}) == 1
    assert sorted(a.status_code for a in different) == [202, 422]
    (refused,) = [a for a in different if a.status_code == 422]
    assert refused.json()["code"] == "idempotency_key_reused"
    assert Notification.objects.count() == 2
    assert sorted(name for name, _ in published) == ["signalbox.notifications.fan_out"] * 2  # one fan-out per intent


def _terminate(pid: int) -> None:
    """pg_terminate_backend from a connection of its own, as an operator or a failover would."""
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_a_dropped_database_connection_answers_503_json_and_the_retry_creates_one_intent(
    tenant: Any, published: list[Any]
):
    api = client_for(tenant)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]

    _terminate(pid)
    dropped = api.post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-9")

    assert dropped.status_code == 503
    assert dropped.json() == {
        "code": "database_unavailable",
        "message": "The database is unavailable; retry shortly.",
        "fields": {},
    }
    assert dropped["Retry-After"] == "5"
    # The next request starts on a new connection (Django's close_old_connections at request start)
    connection.close()
    retried = api.post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-9")
    again = api.post("/api/v1/notifications/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-9")
    assert (retried.status_code, again.status_code) == (202, 202)
    assert again["Idempotent-Replayed"] == "true" and retried.json()["id"] == again.json()["id"]
    assert Notification.objects.count() == 1 and len(published) == 1


@pytest.mark.django_db(transaction=True)
def test_a_request_that_fails_after_writing_leaves_nothing_queued_or_sent(
    tenant: Any, published: list[Any], monkeypatch: pytest.MonkeyPatch
):
    from apps.notifications import serializers

    def broken(notification: Any) -> str:
        raise RuntimeError("the request dies after the intent was written")

    monkeypatch.setattr(serializers, "notification_url", broken)
    api = client_for(tenant)
    api.raise_request_exception = False

    answer = api.post("/api/v1/notifications/", BODY, format="json")
    with pytest.raises(RuntimeError), transaction.atomic():  # the same, for a caller's own transaction
        notification_create(tenant=tenant, **BODY)
        raise RuntimeError("rolled back")

    assert answer.status_code == 500
    assert Notification.objects.count() == 0 and Delivery.objects.count() == 0
    assert published == []
    recovered = sweep(now=far_future())
    assert (recovered.intents, recovered.chunks, recovered.queued, recovered.leases) == (0, 0, 0, 0)
