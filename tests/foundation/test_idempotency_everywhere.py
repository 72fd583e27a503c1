"""`Idempotency-Key` on every POST that creates: the schema says so on each, and each keeps its word —
the same key and body answer the first answer again and make nothing more; another body is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import models
from drf_spectacular.generators import SchemaGenerator

import apps.tasks.testing  # noqa: F401  (registers the test task types the bodies below name)
from apps.core.models import IdempotencyRecord
from apps.events.models import Event, Rule, Watcher, WebhookEndpoint
from apps.notifications.models import Category, Device, Recipient, Template, Topic
from apps.providers.models import ProviderConfig
from apps.tasks.models import Schedule, TaskExecution
from apps.tenancy.models import ApiKey

CREATING = {"201", "202"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def creating_posts(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, methods["post"])
        for path, methods in schema["paths"].items()
        if path.startswith("/api/v1/") and "post" in methods and CREATING & set(methods["post"]["responses"])
    ]


def test_every_creating_post_documents_the_idempotency_key_header(schema):
    posts = creating_posts(schema)
    undocumented = [
        path
        for path, operation in posts
        if not any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
    ]

    assert len(posts) >= 20  # webhook endpoints, rules, templates, topics, api keys, replays, ...
    assert undocumented == []


def test_the_schema_documents_the_refusal_of_a_reused_key(schema):
    rules = schema["paths"]["/api/v1/rules/"]["post"]["responses"]

    assert rules["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "idempotency_key_reused" in rules["422"]["description"]


def test_posts_that_create_nothing_do_not_claim_the_header(schema):
    read_all = schema["paths"]["/api/v1/inbox/read-all/"]["post"]

    assert not any(p["name"] == "Idempotency-Key" for p in read_all.get("parameters", []))


# --- Behaviour -------------------------------------------------------------------------------------


def post(api: Any, path: str, body: dict[str, Any], key: str) -> Any:
    return api.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_a_webhook_endpoint_posted_twice_with_one_key_is_created_once_and_its_secret_replayed(api, tenant):
    body = {"url": "http://127.0.0.1:9/hooks", "description": "orders"}

    first = post(api, "/api/v1/webhook-endpoints/", body, "endpoint-1")
    again = post(api, "/api/v1/webhook-endpoints/", body, "endpoint-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.json()["secret"].startswith("whsec_")
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert WebhookEndpoint.objects.filter(tenant=tenant).count() == 1
    # The secret, shown once, is not kept in clear beside the key
    record = IdempotencyRecord.objects.get(key="endpoint-1")
    assert record.response_sealed and first.json()["secret"] not in str(record.response_body)


@pytest.mark.django_db
def test_a_rule_posted_twice_with_one_key_is_created_once_and_another_body_is_refused(api, tenant):
    body = {
        "name": "paid",
        "event_type": "order.paid",
        "actions": [{"type": "task", "task": "signalbox.testing.count"}],
    }

    first = post(api, "/api/v1/rules/", body, "rule-1")
    again = post(api, "/api/v1/rules/", body, "rule-1")
    other = post(api, "/api/v1/rules/", {**body, "name": "other"}, "rule-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert Rule.objects.filter(tenant=tenant).count() == 1


@pytest.mark.django_db
def test_a_refused_create_keeps_no_answer_so_the_corrected_request_can_reuse_the_key(api, tenant):
    refused = post(api, "/api/v1/rules/", {"name": "paid", "event_type": "order.paid", "actions": []}, "rule-2")
    body = {
        "name": "paid",
        "event_type": "order.paid",
        "actions": [{"type": "task", "task": "signalbox.testing.count"}],
    }
    corrected = post(api, "/api/v1/rules/", body, "rule-2")

    assert refused.status_code in (400, 422) and corrected.status_code == 201
    assert Rule.objects.filter(tenant=tenant).count() == 1


@pytest.mark.django_db
def test_the_same_key_on_two_objects_is_two_operations(api, tenant):
    for external_id in ("ada", "bob"):
        api.post("/api/v1/recipients/", {"external_id": external_id}, format="json")

    ada = post(api, "/api/v1/recipients/ada/webhook-secret/", {}, "secret-1")
    ada_again = post(api, "/api/v1/recipients/ada/webhook-secret/", {}, "secret-1")
    bob = post(api, "/api/v1/recipients/bob/webhook-secret/", {}, "secret-1")

    assert (ada.status_code, bob.status_code) == (201, 201)
    assert ada_again.json()["secret"] == ada.json()["secret"] != bob.json()["secret"]
    assert "Idempotent-Replayed" not in bob.headers and bob.json()["recipient"] == "bob"


def _count(model: type[models.Model]) -> Callable[[Any], int]:
    return lambda tenant: model.objects.filter(tenant=tenant).count()  # type: ignore[attr-defined]


RULE = {"name": "paid", "event_type": "order.paid", "actions": [{"type": "task", "task": "signalbox.testing.count"}]}
TEMPLATE = {
    "key": "welcome",
    "category": "onboarding",
    "variables": ["first_name"],
    "default_channels": ["email"],
    "content": {"default": {"email": {"subject": "Welcome {{ first_name }}", "text": "Hello"}}},
}
# (path, body, what to count, recipients to make first)
CREATES: list[tuple[str, dict[str, Any], Callable[[Any], int], bool]] = [
    ("/api/v1/api-keys/", {"name": "ci", "scopes": ["read"]}, _count(ApiKey), False),
    ("/api/v1/categories/", {"key": "billing", "name": "Billing"}, _count(Category), False),
    ("/api/v1/topics/", {"key": "news", "name": "News"}, _count(Topic), False),
    ("/api/v1/recipients/", {"external_id": "cy", "email": "cy@example.com"}, _count(Recipient), False),
    ("/api/v1/recipients/ada/devices/", {"platform": "android", "token": "t-1"}, _count(Device), True),
    ("/api/v1/templates/", TEMPLATE, _count(Template), False),
    ("/api/v1/rules/", RULE, _count(Rule), False),
    ("/api/v1/webhook-endpoints/", {"url": "http://127.0.0.1:9/"}, _count(WebhookEndpoint), False),
    ("/api/v1/watchers/", {"subject": {"type": "ticket", "id": "7"}, "recipient": "ada"}, _count(Watcher), True),
    ("/api/v1/events/", {"type": "order.paid", "payload": {"total": 3}}, _count(Event), False),
    (
        "/api/v1/providers/configs/",
        {
            "name": "sg",
            "provider": "sendgrid",
            "options": {"from_email": "a@acme.test"},
            "secrets": {"api_key": "SG.x"},
        },
        _count(ProviderConfig),
        False,
    ),
    (
        "/api/v1/schedules/",
        {"name": "nightly", "target": {"task": "signalbox.testing.count", "input": {"steps": 1}}, "cron": "30 3 * * *"},
        _count(Schedule),
        False,
    ),
    ("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 1}}, _count(TaskExecution), False),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "body", "count", "needs_recipient"), CREATES, ids=[c[0] for c in CREATES])
def test_posting_twice_with_one_key_creates_one_object(api, tenant, path, body, count, needs_recipient):
    if needs_recipient:
        assert api.post("/api/v1/recipients/", {"external_id": "ada"}, format="json").status_code == 201
    before = count(tenant)

    first = post(api, path, body, "same-key")
    again = post(api, path, body, "same-key")

    assert first.status_code in (201, 202), first.json()
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert count(tenant) == before + 1
