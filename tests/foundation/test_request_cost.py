"""What the hot API requests cost in SQL statements and Redis round trips, so that a regression shows
(docs/benchmarks.md, "API").

With the cache on Redis, as in production, a known key comes from the process's cache
(apps/tenancy/credentials.py), checked in the one round trip that also counts the rate limit. So a task
poll is one indexed read of the task, a conditional poll that answers 304 one read of its version, and
a notification sent to known recipients with a template the request's transaction (BEGIN, or a
savepoint under a test's transaction) holding the template, the recipients and one INSERT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.notifications.models import Notification, Recipient

pytestmark = pytest.mark.django_db

REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/15"}}


@pytest.fixture(autouse=True)
def redis_cache(settings: Any) -> None:
    settings.CACHES = REDIS


@pytest.fixture
def redis_writes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each write to Redis (a pipelined round trip is one write), from any client in this process."""
    import redis.connection

    sent: list[Any] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(command)
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    return sent


TEMPLATE = {
    "key": "welcome",
    "name": "Welcome",
    "variables": [{"name": "product"}],
    "default_channels": ["in_app"],
    "content": {"default": {"in_app": {"title": "Welcome to {{ product }}", "body": "Your account is ready."}}},
}


def _sql(call: Callable[[], Any]) -> tuple[Any, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = call()
    return response, [q["sql"] for q in captured.captured_queries]


def _started_task(api: Any) -> str:
    response = api.post("/api/v1/tasks/", {"name": "signalbox.exports.deliveries_csv", "input": {}}, format="json")
    assert response.status_code == 202
    return str(response.json()["id"])


def _warm(api: Any, url: str, **headers: Any) -> Any:
    """The key's first uses: the generation is read, then the key cached under it, last_used_at written."""
    for _ in range(3):
        response = api.get(url, **headers)
    return response


def test_a_task_poll_is_one_indexed_read_and_one_round_trip_to_redis(api, redis_writes):
    url = f"/api/v1/tasks/{_started_task(api)}/"
    _warm(api, url)
    redis_writes.clear()

    response, statements = _sql(lambda: api.get(url))

    assert response.status_code == 200
    assert len(statements) == 1, statements
    assert '"tasks_taskexecution"' in statements[0]
    assert len(redis_writes) == 1  # the rate limit's counters and the credentials generation


def test_an_unchanged_task_answers_304_from_one_read_of_its_version(api, redis_writes):
    url = f"/api/v1/tasks/{_started_task(api)}/"
    etag = _warm(api, url)["ETag"]
    redis_writes.clear()

    response, statements = _sql(lambda: api.get(url, HTTP_IF_NONE_MATCH=etag))

    assert response.status_code == 304 and response["ETag"] == etag
    assert len(statements) == 1, statements
    assert statements[0].startswith('SELECT t."version", t."status" FROM "tasks_taskexecution"')
    assert len(redis_writes) == 1


def test_a_changed_task_answers_a_conditional_poll_from_two_reads(api):
    url = f"/api/v1/tasks/{_started_task(api)}/"
    _warm(api, url)

    response, statements = _sql(lambda: api.get(url, HTTP_IF_NONE_MATCH='"0.0"'))

    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert len(statements) == 2, statements  # the version, then the row


def test_without_a_shared_cache_the_key_is_read_on_every_request(api, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    url = f"/api/v1/tasks/{_started_task(api)}/"
    _warm(api, url)

    response, statements = _sql(lambda: api.get(url))

    assert response.status_code == 200
    assert len(statements) == 2 and '"tenancy_apikey"' in statements[0], statements


def test_the_list_filters_do_not_apply_to_one_task(api):
    task_id = _started_task(api)

    response = api.get(f"/api/v1/tasks/{task_id}/", {"status": "failed"})

    assert response.status_code == 200 and response.json()["id"] == task_id


def test_a_notification_to_known_recipients_is_five_statements_and_two_round_trips_to_redis(
    api, redis_writes, django_capture_on_commit_callbacks
):
    assert api.post("/api/v1/templates/", TEMPLATE, format="json").status_code == 201
    ada = Recipient.objects.create(tenant=api_tenant(api), external_id="ada")
    body = {"template": "welcome", "recipients": ["ada"], "payload": {"product": "Signalbox"}}
    for _ in range(2):  # the key's first uses, and the broker connection's first publish
        with django_capture_on_commit_callbacks(execute=True):
            assert api.post("/api/v1/notifications/", body, format="json").status_code == 202
    redis_writes.clear()

    with django_capture_on_commit_callbacks(execute=True) as published:  # the test's transaction never commits
        response, statements = _sql(lambda: api.post("/api/v1/notifications/", body, format="json"))

    assert response.status_code == 202 and len(published) == 1
    # In the request's transaction, the template, the recipients and the INSERT: no key lookup (cached),
    # no second lookup of the recipients, no savepoint around the lone INSERT.
    assert len(statements) == 5, statements
    assert '"notifications_template"' in statements[1] and '"notifications_recipient"' in statements[2]
    assert statements[-2].startswith('INSERT INTO "notifications_notification"')
    assert Notification.objects.get(pk=response.json()["id"]).recipient_ids == [ada.pk]
    # The rate limit's admission, and the fan-out task's LPUSH (sent on commit; no task-sent event).
    assert [bytes(b"".join(c) if isinstance(c, list) else c).split(b"\r\n")[2] for c in redis_writes] == [
        b"EVALSHA",
        b"LPUSH",
    ], redis_writes


def test_named_and_inline_recipients_both_reach_the_notification(api):
    assert api.post("/api/v1/templates/", TEMPLATE, format="json").status_code == 201
    ada = Recipient.objects.create(tenant=api_tenant(api), external_id="ada")
    body = {
        "template": "welcome",
        "payload": {"product": "Signalbox"},
        "recipients": ["ada", {"external_id": "walk-in", "email": "walk-in@example.com"}],
    }

    response = api.post("/api/v1/notifications/", body, format="json")

    assert response.status_code == 202
    walk_in = Recipient.objects.get(external_id="walk-in")
    assert Notification.objects.get(pk=response.json()["id"]).recipient_ids == [ada.pk, walk_in.pk]


def api_tenant(api: Any) -> Any:
    from apps.tenancy.models import ApiKey

    return ApiKey.objects.get(prefix=api.api_key.partition(".")[0]).tenant
