"""Delivery outcomes on the event bus: `delivery.*` per delivery and `notification.sent` per
notification, written with the change that caused them, and only when the tenant listens.
Services are driven directly; tests/events/test_rules.py follows them through the worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.events.models import Event, Rule
from apps.notifications.models import Delivery, Notification
from apps.notifications.services.callbacks import delivery_report
from apps.notifications.services.dispatch import sweep
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_complete_if_settled, notification_create
from apps.notifications.services.sending import deliveries_send

pytestmark = pytest.mark.django_db


def listen(tenant: Any, event_type: str) -> Rule:
    """A rule with no actions is enough for the tenant to observe the type."""
    return Rule.objects.create(tenant=tenant, name=f"watch {event_type}", event_type=event_type, actions=[])


def events(event_type: str) -> list[Event]:
    return list(Event.objects.filter(type=event_type).order_by("created_at"))


def fanned_out(tenant: Any, make_template: Any, make_recipients: Any, *, channels: list[str], n: int = 2) -> Any:
    make_template(default_channels=channels)
    make_recipients(n)
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "A-1"}, recipients=[f"user-{i}" for i in range(n)]
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    return notification


def queued_ids(notification: Any) -> list[str]:
    return [
        str(pk)
        for pk in Delivery.objects.filter(notification=notification, status="queued").values_list("pk", flat=True)
    ]


def test_nobody_listening_means_no_event_is_written(recording_tenant, make_template, make_recipients):
    listen(recording_tenant, "order.*")  # a listener, but not of these types
    notification = fanned_out(recording_tenant, make_template, make_recipients, channels=["email", "in_app"])

    deliveries_send(delivery_ids=queued_ids(notification))

    assert Notification.objects.get(pk=notification.pk).status == "completed"
    assert Event.objects.count() == 0


def test_each_sent_and_delivered_delivery_is_announced_with_who_and_how(
    recording_tenant, make_template, make_recipients
):
    listen(recording_tenant, "delivery.*")
    notification = fanned_out(recording_tenant, make_template, make_recipients, channels=["email", "in_app"])

    # In-app is delivered during fan-out; email waits for the send task.
    assert [e.payload["channel"] for e in events("delivery.delivered")] == ["in_app", "in_app"]
    assert events("delivery.sent") == []

    deliveries_send(delivery_ids=queued_ids(notification))

    sent = events("delivery.sent")
    assert sorted(e.payload["recipient"] for e in sent) == ["user-0", "user-1"]
    first = sent[0]
    delivery = Delivery.objects.get(pk=first.payload["delivery_id"])
    assert first.subject == {"type": "delivery", "id": str(delivery.pk)}
    assert first.source == "signalbox" and first.tenant_id == recording_tenant.pk
    assert first.payload == {
        "delivery_id": str(delivery.pk),
        "notification_id": str(notification.pk),
        "recipient": delivery.recipient.external_id,
        "channel": "email",
        "status": "sent",
        "provider": "recording_sink",
        "provider_message_id": delivery.provider_message_id,
        "attempts": 1,
        "error_code": "",
        "template": "order_shipped",
        "category": "orders",
    }


def test_a_settled_notification_is_announced_once_with_its_deliveries_counted(
    recording_tenant, make_template, make_recipients
):
    listen(recording_tenant, "notification.sent")
    notification = fanned_out(recording_tenant, make_template, make_recipients, channels=["email", "in_app"])
    assert events("notification.sent") == []  # the emails are still queued

    deliveries_send(delivery_ids=queued_ids(notification))
    # A second look (the sweeper's) finds it completed already.
    notification_complete_if_settled(notification_id=notification.pk, tenant_id=recording_tenant.pk)

    [announced] = events("notification.sent")
    assert announced.subject == {"type": "notification", "id": str(notification.pk)}
    assert announced.payload["deliveries"] == {"delivered": 2, "sent": 2}
    assert announced.payload["recipients"] == 2 and announced.payload["template"] == "order_shipped"
    assert events("delivery.sent") == []  # only the types listened to are written


def test_a_provider_report_announces_and_counts_delivered_once_however_often_it_comes(
    recording_tenant, make_template, make_recipients
):
    listen(recording_tenant, "delivery.delivered")
    notification = fanned_out(recording_tenant, make_template, make_recipients, channels=["email"], n=1)
    deliveries_send(delivery_ids=queued_ids(notification))
    delivery = Delivery.objects.get(notification=notification)
    assert delivery.status == "sent"

    labels = {"channel": "email", "provider": "recording_sink", "status": "delivered"}
    counted_before = REGISTRY.get_sample_value("signalbox_deliveries_total", labels) or 0.0

    assert delivery_report(delivery_id=delivery.pk, status="delivered", tenant_id=recording_tenant.pk)
    assert not delivery_report(delivery_id=delivery.pk, status="delivered", tenant_id=recording_tenant.pk)

    [announced] = events("delivery.delivered")
    assert announced.payload["delivery_id"] == str(delivery.pk) and announced.payload["status"] == "delivered"
    assert REGISTRY.get_sample_value("signalbox_deliveries_total", labels) == counted_before + 1


def test_a_report_for_another_tenants_delivery_announces_nothing(
    recording_tenant, other_tenant, make_template, make_recipients
):
    listen(recording_tenant, "delivery.*")
    listen(other_tenant, "delivery.*")
    notification = fanned_out(recording_tenant, make_template, make_recipients, channels=["email"], n=1)
    deliveries_send(delivery_ids=queued_ids(notification))
    delivery = Delivery.objects.get(notification=notification)

    assert not delivery_report(delivery_id=delivery.pk, status="delivered", tenant_id=other_tenant.pk)

    assert events("delivery.delivered") == []
    assert not Event.objects.filter(tenant=other_tenant).exists()


def test_a_delivery_whose_last_lease_runs_out_is_announced_dead(recording_tenant, make_template, make_recipients):
    listen(recording_tenant, "delivery.dead")
    recording_tenant.settings = {**recording_tenant.settings, "retry_policy": {"max_attempts": 1}}
    recording_tenant.save(update_fields=["settings"])
    notification = fanned_out(recording_tenant, make_template, make_recipients, channels=["email"], n=1)
    delivery = Delivery.objects.get(notification=notification)
    # A worker claimed it and died before recording anything.
    Delivery.objects.filter(pk=delivery.pk).update(
        status="sending", attempts=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    sweep()

    [announced] = events("delivery.dead")
    assert announced.payload["delivery_id"] == str(delivery.pk)
    assert (announced.payload["status"], announced.payload["error_code"]) == ("dead", "lease_expired")
