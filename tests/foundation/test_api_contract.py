"""What the API answers around its views, as the schema says (docs/architecture.md, "The schema tells
the truth"): JSON 404s for unclaimed paths, JSON only both ways, checked pagination and boolean filters,
and the schema facts drf-spectacular leaves out (nullable read-only fields, protocol errors)."""

from __future__ import annotations

from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_a_malformed_id_answers_the_json_error_not_an_html_page(api):
    response = api.get("/api/v1/notifications/not-a-uuid/")
    posted = api.post("/api/v1/tasks/not-a-uuid/cancel/", {}, format="json")

    assert (response.status_code, response["Content-Type"]) == (404, "application/json")
    assert response.json()["code"] == "not_found"
    assert posted.status_code == 404 and posted.json()["code"] == "not_found"  # no CSRF page either


def test_a_form_body_answers_415_and_an_html_accept_406(api):
    form = api.post("/api/v1/categories/", {"key": "orders"}, format="multipart")
    html = api.get("/api/v1/categories/", HTTP_ACCEPT="text/html")

    assert (form.status_code, form.json()["code"]) == (415, "unsupported_media_type")
    assert (html.status_code, html["Content-Type"]) == (406, "application/json")


@pytest.mark.parametrize("query", ["offset=abc", "offset=-1", "limit=0", "limit=1.5", "offset=99999999999"])
def test_pagination_refuses_what_is_not_a_whole_number_in_range(api, query):
    response = api.get(f"/api/v1/categories/?{query}")

    assert response.status_code == 400
    assert set(response.json()["fields"]) <= {"limit", "offset"}


def test_a_boolean_filter_refuses_a_non_boolean_and_ignores_an_empty_value(api):
    refused = api.get("/api/v1/rules/?enabled=null")

    assert (refused.status_code, refused.json()["fields"]) == (400, {"enabled": ["true or false."]})
    assert api.get("/api/v1/rules/?enabled=").status_code == 200
    assert api.get("/api/v1/rules/?enabled=false").status_code == 200


def test_a_new_topic_answers_its_subscriber_count(api):
    assert api.post("/api/v1/topics/", {"key": "beta"}, format="json").json()["subscribers"] == 0


def test_the_schema_says_what_the_stack_answers_around_every_view(schema):
    api_keys = schema["components"]["schemas"]["ApiKey"]["properties"]
    create_recipient = schema["paths"]["/api/v1/recipients/"]["post"]
    cancel_task = schema["paths"]["/api/v1/tasks/{id}/cancel/"]["post"]
    list_rules = {p["name"]: p for p in schema["paths"]["/api/v1/rules/"]["get"]["parameters"]}

    assert api_keys["expires_at"]["nullable"] is True  # declared by hand, read from a nullable column
    assert {"401", "404", "406", "409", "413", "415", "429"} <= set(create_recipient["responses"])
    assert "409" in cancel_task["responses"]
    assert list(create_recipient["requestBody"]["content"]) == ["application/json"]
    assert list_rules["enabled"]["allowEmptyValue"] is True
    assert list_rules["offset"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "orders", "critical": 1}, "critical"),  # a number is not a boolean
        ({"key": "orders", "critical": "true"}, "critical"),  # nor is a string
        ({"key": "orders", "name": 42}, "name"),  # a number is not a string
        ({"key": 7}, "key"),
    ],
)
def test_a_request_body_is_read_with_json_types(api, body, field):
    refused = api.post("/api/v1/categories/", body, format="json")

    assert refused.status_code == 400, refused.json()
    assert refused.json()["code"] == "validation_error" and field in refused.json()["fields"]
    assert api.get("/api/v1/categories/").json()["results"] == []


def test_an_integer_field_takes_a_number_not_a_string(api):
    api.post("/api/v1/categories/", {"key": "orders"}, format="json")
    api.post("/api/v1/templates/", {"key": "hi", "category": "orders", "content": {"default": {}}}, format="json")
    body = {"template": "hi", "recipients": ["user-1"], "dedup_key": "k", "dedup_window_seconds": "60"}

    refused = api.post("/api/v1/notifications/", body, format="json")

    assert refused.status_code == 400 and "dedup_window_seconds" in refused.json()["fields"]


def test_query_parameters_keep_their_text_booleans(api):
    api.post("/api/v1/categories/", {"key": "orders", "critical": True}, format="json")

    assert api.get("/api/v1/rules/?enabled=1").status_code == 200
    assert [c["key"] for c in api.get("/api/v1/categories/").json()["results"]] == ["orders"]


def test_a_well_formed_request_refused_by_a_rule_about_other_data_is_422(api):
    past = api.post("/api/v1/api-keys/", {"name": "ci", "expires_at": "2001-01-01T00:00:00Z"}, format="json")
    unknown_task = api.post("/api/v1/tasks/", {"name": "signalbox.nope", "input": {}}, format="json")
    unknown_category = api.put(
        "/api/v1/preferences/defaults/", {"preferences": [{"category": "nope", "channels": {}}]}, format="json"
    )
    neither = api.post("/api/v1/deliveries/replay/", {}, format="json")

    assert (past.status_code, past.json()["code"]) == (422, "invalid_expiry")
    assert (unknown_task.status_code, unknown_task.json()["code"]) == (422, "unknown_task")
    assert unknown_category.status_code == 422
    assert unknown_category.json()["fields"] == {"preferences": {"0": {"category": ["Unknown category 'nope'."]}}}
    assert (neither.status_code, neither.json()["code"]) == (422, "validation_error")


def test_filtering_webhook_messages_by_an_id_of_nothing_is_an_empty_list(api):
    nothing = "00000000-0000-4000-8000-000000000000"

    for name in ("endpoint_id", "event_id"):
        answer = api.get(f"/api/v1/webhook-messages/?{name}={nothing}")
        assert (answer.status_code, answer.json()["results"]) == (200, [])
    assert api.get("/api/v1/webhook-messages/?endpoint_id=not-a-uuid").status_code == 400


def test_the_request_schema_says_the_shape_the_view_checks(schema):
    bodies = schema["components"]["schemas"]
    reschedule = schema["paths"]["/api/v1/notifications/{id}/reschedule/"]["patch"]["requestBody"]
    reschedule_body = bodies[reschedule["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    digest = bodies["NotificationCreateRequest"]["properties"]["digest"]
    target = bodies["ScheduleCreateRequest"]["properties"]["target"]
    bulk_items = bodies["RecipientBulkRequest"]["properties"]["recipients"]["items"]

    assert reschedule_body["required"] == ["scheduled_at"] and reschedule["required"] is True
    assert digest["additionalProperties"] is False and digest["required"] == ["window_minutes"]
    assert bodies["TemplateWriteRequest"]["properties"]["digest"]["nullable"] is True
    assert target["required"] == ["task"] and set(target["properties"]) == {"task", "input"}
    assert bodies["RecipientRequest"]["properties"]["data"]["type"] == "object"
    assert bulk_items == {"$ref": "#/components/schemas/RecipientRequest"}


def test_an_email_longer_than_its_column_is_a_field_error_not_a_500(api):
    email = "a@" + ".".join(["b" * 63] * 4) + ".com"  # valid to Django's validator, 262 characters

    refused = api.post(
        "/api/v1/recipients/bulk/", {"recipients": [{"external_id": "u1", "email": email}]}, format="json"
    )

    assert refused.status_code == 400, refused.content[:300]
    assert api.get("/api/v1/recipients/").json()["results"] == []
