"""Hostile input answers a JSON error in the shared shape and writes nothing: JSON nested too deep, NUL and
lone surrogates, NaN, time zone offsets PostgreSQL cannot hold, bodies over the size limit, and two
creates of one key racing past the existence check."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from django.db import connection
from django.db.models.query import QuerySet
from django.test import Client
from rest_framework.test import APIClient

from apps.notifications.models import Category, Notification, Recipient, Template, Topic
from apps.providers.models import ProviderEvent
from apps.tasks.models import TaskExecution
from sandbox.keys import event_webhook_public_key, sign_event_webhook
from tests.conftest import client_for

DEEP = b"[" * 10_000 + b"]" * 10_000
# Each of these posts, with a valid key, a body the endpoint would otherwise parse.
ENDPOINTS = [
    ("/api/v1/notifications/", Notification),
    ("/api/v1/tasks/", TaskExecution),
    ("/api/v1/recipients/", Recipient),
    ("/api/v1/templates/", Template),
]


def nested(depth: int, external_id: str) -> dict[str, Any]:
    """A recipient whose JSON is `depth` levels deep: the body, `data`, then lists."""
    value: Any = "leaf"
    for _ in range(depth - 2):
        value = [value]
    return {"external_id": external_id, "data": {"deep": value}}


def raw_post(api: APIClient, path: str, body: bytes) -> Any:
    return api.generic("POST", path, body.decode(), content_type="application/json")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json", response.content[:200]
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code), body
    assert set(body) == {"code", "message", "fields"}
    return dict(body)


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "model"), ENDPOINTS, ids=[p for p, _ in ENDPOINTS])
def test_json_nested_ten_thousand_deep_is_refused_as_too_deep(api, path, model):
    response = raw_post(api, path, DEEP)

    assert_error(response, 400, "too_deep")
    assert not model.objects.exists()


@pytest.mark.django_db
def test_the_depth_limit_is_sixty_four_levels(api):
    allowed = raw_post(api, "/api/v1/recipients/", json.dumps(nested(64, "ada")).encode())
    refused = raw_post(api, "/api/v1/recipients/", json.dumps(nested(65, "bob")).encode())

    assert allowed.status_code == 201, allowed.json()
    assert assert_error(refused, 400, "too_deep")["fields"] == {"limit": 64}
    assert list(Recipient.objects.values_list("external_id", flat=True)) == ["ada"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"external_id": "ada", "name": "Ada\u0000"}, "name"),
        ({"external_id": "ada", "data": {"tags": ["ok", "bad\u0000"]}}, "data.tags[1]"),
        ({"external_id": "ada", "data": {"key\u0000": 1}}, "data.key\u0000"),
    ],
    ids=["field", "nested", "key"],
)
def test_a_nul_character_anywhere_in_a_json_body_is_refused_with_its_path(api, body, field):
    response = api.post("/api/v1/recipients/", body, format="json")

    assert list(assert_error(response, 400, "invalid_character")["fields"]) == [field]
    assert not Recipient.objects.exists()


@pytest.mark.django_db
def test_a_lone_surrogate_is_refused(api):
    response = raw_post(api, "/api/v1/recipients/", b'{"external_id": "ada", "name": "\\ud800"}')
    paired = raw_post(api, "/api/v1/recipients/", b'{"external_id": "bob", "name": "\\ud83d\\ude00"}')

    assert list(assert_error(response, 400, "invalid_character")["fields"]) == ["name"]
    assert paired.status_code == 201 and paired.json()["name"] == "\U0001f600"
    assert list(Recipient.objects.values_list("external_id", flat=True)) == ["bob"]


@pytest.mark.django_db
def test_nan_is_not_a_json_number(api):
    response = raw_post(api, "/api/v1/recipients/", b'{"external_id": "ada", "data": {"score": NaN}}')

    assert_error(response, 400, "invalid_number")
    assert not Recipient.objects.exists()


@pytest.mark.django_db
def test_a_nul_in_a_query_parameter_a_path_or_a_callbacks_form_is_refused(api):
    query = api.get("/api/v1/recipients/", {"email": "a\u0000@example.com"})
    path = api.get("/api/v1/topics/a%00b/")
    callback = Client().post(
        "/callbacks/twilio/status?delivery=x", {"AccountSid": "AC\u0000", "MessageStatus": "delivered"}
    )

    assert list(assert_error(query, 400, "invalid_character")["fields"]) == ["query.email"]
    assert list(assert_error(path, 400, "invalid_character")["fields"]) == ["path"]
    assert list(assert_error(callback, 400, "invalid_character")["fields"]) == ["AccountSid"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/notifications/", "created_after"),
        ("/api/v1/notifications/", "created_before"),
        ("/api/v1/deliveries/", "created_after"),
        ("/api/v1/tasks/", "created_before"),
        ("/api/v1/audit/", "since"),
    ],
)
def test_a_utc_offset_beyond_postgresqls_range_is_a_400_on_the_parameter(api, path, parameter):
    beyond = api.get(path, {parameter: "2026-01-01T00:00:00+16:00"})
    within = api.get(path, {parameter: "2026-01-01T00:00:00+14:00"})

    assert list(assert_error(beyond, 400, "validation_error")["fields"]) == [parameter]
    assert within.status_code == 200


@pytest.mark.django_db
def test_a_body_over_the_limit_is_a_json_413(api, settings):
    big = b'{"external_id": "ada", "name": "' + b"x" * (10 * 1024 * 1024) + b'"}'

    response = raw_post(api, "/api/v1/recipients/", big)
    callback = Client().post(
        "/callbacks/twilio/status?delivery=x", big, content_type="application/x-www-form-urlencoded"
    )

    body = assert_error(response, 413, "too_large")
    assert body["fields"] == {"limit_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
    assert_error(callback, 413, "too_large")
    assert not Recipient.objects.exists()


# --- The SendGrid Event Webhook: anonymous, so the signature comes before any parsing ---------------

SEED = "hostile-input"
EVENTS_URL = "/callbacks/sendgrid/events"


def post_events(body: bytes, *, seed: str) -> Any:
    stamp = str(int(time.time()))
    return Client().post(
        EVENTS_URL,
        data=body,
        content_type="application/json",
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=sign_event_webhook(seed, stamp, body),
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=stamp,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("environment_key", [True, False], ids=["environment-key", "tenant-keys-only"])
def test_an_anonymous_deep_body_on_the_event_webhook_is_refused_as_a_forgery(settings, environment_key):
    settings.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = event_webhook_public_key(SEED) if environment_key else ""

    forged = post_events(DEEP, seed="someone-else")
    nul = post_events(b'[{"event": "delivered", "sg_event_id": "a\\u0000"}]', seed="someone-else")

    assert_error(forged, 403, "signature_invalid")
    assert_error(nul, 403, "signature_invalid")
    assert not ProviderEvent.objects.exists()


@pytest.mark.django_db
def test_a_signed_body_that_breaks_the_input_limits_is_refused_with_their_code(settings):
    settings.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = event_webhook_public_key(SEED)

    deep = post_events(DEEP, seed=SEED)
    nul = post_events(b'[{"event": "delivered", "sg_event_id": "a\\u0000"}]', seed=SEED)

    assert_error(deep, 400, "too_deep")
    assert_error(nul, 400, "invalid_character")
    assert not ProviderEvent.objects.exists()


# --- Two creates of one key at once ---------------------------------------------------------------


def race_creates(clients: list[APIClient], path: str, body: dict[str, Any], model: type[Any]) -> list[Any]:
    """Both requests pass the existence check before either saves: the database's constraint decides."""
    answers: list[Any] = [None] * len(clients)
    barrier = threading.Barrier(len(clients))
    exists = QuerySet.exists

    def exists_then_wait(queryset: QuerySet[Any]) -> bool:
        found = exists(queryset)
        if queryset.model is model:
            barrier.wait(timeout=10)
        return found

    def post(slot: int) -> None:
        try:
            answers[slot] = clients[slot].post(path, body, format="json")
        finally:
            connection.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(QuerySet, "exists", exists_then_wait)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(clients))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    return answers


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "model", "code"),
    [("/api/v1/topics/", Topic, "topic_exists"), ("/api/v1/categories/", Category, "category_exists")],
    ids=["topic", "category"],
)
def test_two_concurrent_creates_of_one_key_make_one_object_and_a_409(tenant, path, model, code):
    clients = [client_for(tenant) for _ in range(2)]

    answers = race_creates(clients, path, {"key": "news", "name": "News"}, model)

    assert sorted(a.status_code for a in answers) == [201, 409]
    (refused,) = [a for a in answers if a.status_code == 409]
    assert refused.json()["code"] == code and refused.json()["fields"] == {"key": ["Already exists."]}
    assert model.objects.filter(tenant=tenant, key="news").count() == 1
