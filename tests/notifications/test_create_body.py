"""The notification POST's body read without the serializer (`notification_create_data`) is the
serializer's: the same validated data for the common shape, and the serializer itself (its 400s) for
anything else (docs/benchmarks.md "API")."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from rest_framework.exceptions import ValidationError

from apps.notifications.serializers import NotificationCreateSerializer, _lean_create_data, notification_create_data

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
