"""The per-process API key cache (apps/tenancy/credentials.py) keeps `api_key_revoke`'s promise: a key
revoked, or a tenant suspended, in one process is refused on the very next request in another process
that had the key cached; with Redis unreachable nothing cached is trusted; `last_used_at` is written at
most once a minute whatever the number of processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.tenancy import credentials
from apps.tenancy.models import ApiKey
from apps.tenancy.services import api_key_create, api_key_revoke
from apps.tenancy.throttling import ApiKeyRateThrottle
from tests.conftest import ROOT, worker_env

URL = "redis://127.0.0.1:6379/15"  # a database of its own: the broker's (0) is shared with other workers' queues
REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": URL}}
UNREACHABLE = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
}

# Another API process: answers each path read on stdin with its status, error code and SQL statements.
REPLICA = """
import json, sys, django
django.setup()
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
client = APIClient()
client.credentials(HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
for line in sys.stdin:
    with CaptureQueriesContext(connection) as captured:
        answer = client.get(line.strip(), HTTP_HOST="localhost")
    code = answer.json().get("code") if answer.status_code >= 400 else None
    sql = [q["sql"] for q in captured.captured_queries]
    print(json.dumps({"status": answer.status_code, "code": code, "sql": sql}), flush=True)
"""


class Replica:
    def __init__(self, key: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", REPLICA, key],
            env=worker_env(CACHE_URL=URL),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def get(self, path: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(path + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the replica exited"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def replica_of(settings: Any) -> Iterator[Any]:
    settings.CACHES = REDIS
    started: list[Replica] = []

    def start(key: str) -> Replica:
        replica = Replica(key)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.close()


def _reads_the_key(answer: dict[str, Any]) -> bool:
    return any('"tenancy_apikey"' in sql and sql.lstrip().startswith("SELECT") for sql in answer["sql"])


def _cached_in(replica: Replica) -> None:
    """Until the replica answers from its cache (its first request reads the generation before any
    is set, its second caches the key under it)."""
    for _ in range(3):
        answer = replica.get("/api/v1/tenant/")
        assert answer["status"] == 200, answer
        if not _reads_the_key(answer):
            return
    raise AssertionError("the replica never answered from its cache")


@pytest.mark.django_db(transaction=True)
def test_a_key_revoked_here_is_refused_by_the_next_request_in_another_process(tenant: Any, replica_of: Any):
    key, clear = api_key_create(tenant=tenant, name="ci")
    other = replica_of(clear)
    _cached_in(other)

    api_key_revoke(key=key)
    answer = other.get("/api/v1/tenant/")

    assert (answer["status"], answer["code"]) == (401, "revoked_api_key")


@pytest.mark.django_db(transaction=True)
def test_a_tenant_suspended_here_is_refused_by_the_next_request_in_another_process(tenant: Any, replica_of: Any):
    _, clear = api_key_create(tenant=tenant, name="ci")
    other = replica_of(clear)
    _cached_in(other)

    tenant.is_active = False
    tenant.save()
    answer = other.get("/api/v1/tenant/")

    assert (answer["status"], answer["code"]) == (401, "tenant_inactive")


@pytest.mark.django_db
def test_with_redis_unreachable_the_cache_is_not_trusted(tenant: Any, settings: Any, monkeypatch: Any):
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": None})  # the throttle needs Redis too
    settings.CACHES = REDIS
    key, clear = api_key_create(tenant=tenant, name="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    for _ in range(2):
        assert api.get("/api/v1/tenant/").status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert api.get("/api/v1/tenant/").status_code == 200
    assert not any('"tenancy_apikey"' in q["sql"] for q in captured.captured_queries), "not cached"

    # A revocation whose generation bump never reached anyone (written behind the services' back) …
    ApiKey.objects.filter(pk=key.pk).update(revoked=True)
    settings.CACHES = UNREACHABLE
    # … is still seen at once when Redis cannot be asked whether the cache holds: it is not trusted.
    response = api.get("/api/v1/tenant/")
    assert response.status_code == 401 and response.json()["code"] == "revoked_api_key"


@pytest.mark.django_db
def test_a_cache_entry_is_reloaded_after_its_maximum_age(tenant: Any, settings: Any, monkeypatch: Any):
    settings.CACHES = REDIS
    key, clear = api_key_create(tenant=tenant, name="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    for _ in range(2):
        assert api.get("/api/v1/tenant/").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(revoked=True)  # behind the services' back: no bump
    assert api.get("/api/v1/tenant/").status_code == 200  # the cache still holds it …

    monkeypatch.setattr(credentials, "MAX_AGE_SECONDS", 0.0)
    assert api.get("/api/v1/tenant/").json()["code"] == "revoked_api_key"  # … but not past its age


@pytest.mark.django_db
def test_a_wrong_secret_with_a_real_prefix_does_not_spend_that_keys_rate(tenant: Any, settings: Any, monkeypatch: Any):
    settings.CACHES = REDIS
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    key, clear = api_key_create(tenant=tenant, name="ci")
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION=f"Bearer {key.prefix}.{'x' * 32}")
    assert [forged.get("/api/v1/tenant/").status_code for _ in range(5)] == [401] * 5

    real = APIClient()
    real.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert [real.get("/api/v1/tenant/").status_code for _ in range(4)] == [200, 200, 200, 429]
    window = int(time.time() // 60)  # only this test's counters; never FLUSHDB a shared Redis
    caches["default"].delete_many([f"throttle:key:{key.prefix}:{w}" for w in (window - 1, window)])


@pytest.mark.django_db(transaction=True)
def test_last_used_at_is_written_at_most_once_a_minute_across_processes(tenant: Any, replica_of: Any):
    key, clear = api_key_create(tenant=tenant, name="ci")
    first, second = replica_of(clear), replica_of(clear)

    assert first.get("/api/v1/tenant/")["status"] == 200
    used = ApiKey.objects.get(pk=key.pk).last_used_at
    assert used is not None
    # The second process's copy of the key was never used, but the row says it was, this minute.
    assert second.get("/api/v1/tenant/")["status"] == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at == used
    # Once the row is a minute old, the next process that asks writes it again.
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=used - timedelta(seconds=61))
    third = replica_of(clear)
    assert third.get("/api/v1/tenant/")["status"] == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at > used
