"""What the hot API requests cost in SQL statements, so that a regression shows (docs/benchmarks.md, "API").

A task poll is the key's lookup and one indexed read of the task; a notification sent to known
recipients with a template is the key, then the request's transaction (BEGIN, or a savepoint under
a test's transaction) holding the template, the recipients and one INSERT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.notifications.models import Notification, Recipient

pytestmark = pytest.mark.django_db

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


def test_a_task_poll_is_the_key_lookup_and_one_indexed_read(api):
    url = f"/api/v1/tasks/{_started_task(api)}/"

    response, statements = _sql(lambda: api.get(url))

    assert response.status_code == 200
    assert len(statements) == 2, statements
    assert '"tenancy_apikey"' in statements[0] and '"tasks_taskexecution"' in statements[1]


def test_an_unchanged_task_answers_304_from_the_same_two_statements(api):
    url = f"/api/v1/tasks/{_started_task(api)}/"
    etag = api.get(url)["ETag"]

    response, statements = _sql(lambda: api.get(url, HTTP_IF_NONE_MATCH=etag))

    assert response.status_code == 304 and response["ETag"] == etag
    assert len(statements) == 2, statements


def test_the_list_filters_do_not_apply_to_one_task(api):
    task_id = _started_task(api)

    response = api.get(f"/api/v1/tasks/{task_id}/", {"status": "failed"})

    assert response.status_code == 200 and response.json()["id"] == task_id


def test_a_notification_to_known_recipients_is_six_statements(api):
    assert api.post("/api/v1/templates/", TEMPLATE, format="json").status_code == 201
    ada = Recipient.objects.create(tenant=api_tenant(api), external_id="ada")
    body = {"template": "welcome", "recipients": ["ada"], "payload": {"product": "Signalbox"}}
    assert api.post("/api/v1/notifications/", body, format="json").status_code == 202  # the key's first use

    response, statements = _sql(lambda: api.post("/api/v1/notifications/", body, format="json"))

    assert response.status_code == 202
    # The key; then, in the request's transaction, the template, the recipients and the INSERT: no
    # second lookup of the recipients, no savepoint around the lone INSERT.
    assert len(statements) == 6, statements
    assert statements[-2].startswith('INSERT INTO "notifications_notification"')
    assert Notification.objects.get(pk=response.json()["id"]).recipient_ids == [ada.pk]


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
