"""The inbox marker: a fan-out chunk asks about each of its recipients' inboxes only when some inbox
stream of the tenant is open (the marker every inbox stream registers with its own group)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from apps.core import live
from apps.notifications.services.inbox import inbox_group, inbox_publish, inboxes_tenant_group
from apps.realtime.auth import Principal
from apps.realtime.streams import InboxStream

pytestmark = pytest.mark.django_db


class RecordingSink:
    def __init__(self, listened: set[str]) -> None:
        self.listened = listened
        self.asked: list[list[str]] = []

    def listening(self, groups: Sequence[str]) -> set[str]:
        self.asked.append(list(groups))
        return self.listened & set(groups)

    def publish(self, messages: Sequence[Any]) -> None:
        pass


def _publish(sink: RecordingSink, monkeypatch: Any, capture: Any, tenant_id: str) -> None:
    monkeypatch.setattr(live, "_sink", sink)
    with capture(execute=True):
        inbox_publish([(uuid.uuid4(), 1), (uuid.uuid4(), 2)], tenant_id=tenant_id)


def test_nobody_in_the_tenant_listening_means_no_inbox_is_asked_about(monkeypatch, django_capture_on_commit_callbacks):
    sink = RecordingSink(listened={inboxes_tenant_group("other-tenant"), inbox_group(1)})

    _publish(sink, monkeypatch, django_capture_on_commit_callbacks, "acme")

    assert sink.asked == [[inboxes_tenant_group("acme")]]  # one small question, after the commit


def test_an_open_inbox_in_the_tenant_means_each_inbox_is_asked_about(monkeypatch, django_capture_on_commit_callbacks):
    sink = RecordingSink(listened={inboxes_tenant_group("acme"), inbox_group(2)})

    _publish(sink, monkeypatch, django_capture_on_commit_callbacks, "acme")

    assert sink.asked == [[inboxes_tenant_group("acme")], [inbox_group(1), inbox_group(2)]]


def test_an_inbox_stream_registers_its_tenants_marker():
    principal = Principal(tenant_id="acme", tenant_settings={}, recipient_pk=7, expires_at=None)

    stream = InboxStream(principal)

    assert stream.markers == [inboxes_tenant_group("acme")]
    assert stream.groups == [inbox_group(7)]
