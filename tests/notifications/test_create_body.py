"""The notification POST's body read without the serializer (`notification_create_data`) is the
serializer's: the same validated data for the common shape, and the serializer itself (its 400s) for
anything else; and its prebuilt INSERT writes the row the ORM wrote (docs/benchmarks.md "API")."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from rest_framework.exceptions import ValidationError

from apps.notifications.models import Notification, Recipient
from apps.notifications.serializers import NotificationCreateSerializer, _lean_create_data, notification_create_data
from apps.tenancy.models import ApiKey

VALUES: dict[str, list[Any]] = {
    "template": ["welcome", " welcome", "welcome ", "", "   ", "wel\x00come", "wélcome", "\ud800", 42, None, True, []],
    "recipients": [
        ["ada"],
        [],
        ["ada", "bob", "ada"],
        [""],
        ["ada", 1],
        ["ada", None],
        [{"external_id": "x"}],
        "ada",
        {},
        None,
    ],
    "payload": [{}, {"product": "Signalbox", "n": [1, {"a": None}]}, {"x": None}, [], "x", None, 1],
    "channels": [["email"], ["in_app", "email", "in_app"], [], [""], ["fax"], "email", [1], None],
    "priority": ["normal", "high", "bulk", "", "NORMAL", 1, None],
}


def _bodies() -> list[Any]:
    bodies: list[Any] = [None, [], "x", {}, {"template": "welcome", "topic": "beta"}, {"template": "w", "unknown": 1}]
    for key, values in VALUES.items():
        bodies += [{key: v} for v in values]
    base = {"template": "welcome", "recipients": ["ada"], "payload": {"product": "Signalbox"}}
    for key, values in VALUES.items():
        bodies += [{**base, key: v} for v in values]
    for channels, priority in itertools.product(VALUES["channels"], VALUES["priority"]):
        bodies.append({**base, "channels": channels, "priority": priority})
    return bodies


@pytest.mark.parametrize("body", _bodies(), ids=repr)
def test_the_lean_read_is_the_serializers_or_gives_way_to_it(body: Any) -> None:
    full = NotificationCreateSerializer(data=body)
    valid = full.is_valid()
    lean = _lean_create_data(body)
    if lean is None:
        return  # the serializer reads it (and answers its 400)
    assert valid, (body, full.errors)  # never accepts what the serializer refuses
    assert lean == dict(full.validated_data)
    assert {k: type(v) for k, v in lean.items()} == {k: type(v) for k, v in full.validated_data.items()}


def test_the_common_body_takes_the_lean_read() -> None:
    body = {"template": "welcome", "recipients": ["ada"], "payload": {"product": "Signalbox"}}
    assert _lean_create_data(body) is not None
    assert _lean_create_data({**body, "channels": ["email"], "priority": "high"}) is not None


def test_anything_else_gets_the_serializers_errors() -> None:
    with pytest.raises(ValidationError) as refused:
        notification_create_data({"template": "", "recipients": ["ada"]})
    assert "template" in refused.value.detail  # type: ignore[operator]
    with pytest.raises(ValidationError) as refused:
        notification_create_data({"template": "welcome", "channels": ["fax"]})
    assert "channels" in refused.value.detail  # type: ignore[operator]


@pytest.mark.django_db
def test_the_notification_insert_writes_what_the_orms_save_writes(api: Any) -> None:
    """Every column of the row the POST's prebuilt INSERT wrote reads back as the ORM's save would."""

    template = {
        "key": "welcome",
        "variables": [{"name": "product"}],
        "default_channels": ["in_app"],
        "content": {"default": {"in_app": {"title": "Welcome to {{ product }}", "body": "Ready."}}},
    }
    assert api.post("/api/v1/templates/", template, format="json").status_code == 201
    tenant = ApiKey.objects.get(prefix=api.api_key.partition(".")[0]).tenant
    ada = Recipient.objects.create(tenant=tenant, external_id="ada")
    body = {"template": "welcome", "recipients": ["ada"], "payload": {"product": "Signalbox", "n": [1, None]}}

    response = api.post("/api/v1/notifications/", body, format="json")

    assert response.status_code == 202
    row = Notification.objects.select_related("template", "template_version", "category").get(pk=response.json()["id"])
    assert row.template is not None and row.template_version is not None
    assert (row.tenant_id, row.template.key, row.template_version.version) == (tenant.pk, "welcome", 1)
    assert row.template.current_version_id == row.template_version.pk and row.category_id == row.template.category_id
    assert row.payload == {"product": "Signalbox", "n": [1, None]} and row.recipient_ids == [ada.pk]
    assert (row.channels, row.priority, row.status, row.content, row.digest) == (
        ["in_app"],
        "normal",
        "accepted",
        None,
        None,
    )
    assert (row.metadata, row.dedup_key, row.dedup_window_seconds, row.idempotency_key) == ({}, "", 0, "")
    assert row.created_at is not None and row.updated_at is not None and row.enqueued_at is not None
    assert row.created_at <= row.updated_at and row.scheduled_at is None and row.chunks_total == 0
