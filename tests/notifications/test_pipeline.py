"""End to end through the real Celery worker and PostgreSQL: POST -> fan-out -> send -> adapter.

The tenant's external channels go to the `recording_sink` adapter (chosen in the tenant's
settings, which the worker reads from the database), so every message a provider would have
received is a SinkRecord row this test can read; in-app messages are read back through the inbox.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.notifications.models import (
    Category,
    Delivery,
    DeliveryAttempt,
    Notification,
    Preference,
    Recipient,
    SinkRecord,
)
from apps.notifications.services.dispatch import dispatch_due
from apps.notifications.services.fanout import notification_fan_out
from tests.conftest import wait_for

pytestmark = pytest.mark.worker


def _post(api, body, **headers) -> str:
    response = api.post("/api/v1/notifications/", body, format="json", **headers)
    assert response.status_code == 202, response.json()
    return str(response.json()["id"])


def _settled(notification_id: str, status: str = "completed", timeout: float = 30) -> Notification:
    return wait_for(
        lambda: Notification.objects.filter(pk=notification_id, status=status).first(),
        timeout=timeout,
        message=f"notification {status}",
    )


def test_every_delivery_reaches_its_adapter_once_in_the_recipients_language(
    worker, api, recording_tenant, make_template, make_recipients
):
    # Given a template in English and French, and recipients in en, fr-CA and de
    make_template(default_channels=["email", "sms", "in_app"])
    make_recipients(1, prefix="en", locale="en", phone="+14155550100")
    make_recipients(1, prefix="qc", locale="fr-CA", phone="+15145550100", name="Élodie")
    make_recipients(1, prefix="de", locale="de", phone="+4930123456")

    # When one notification is posted
    notification_id = _post(
        api, {"template": "order_shipped", "payload": {"order_id": "A-7"}, "recipients": ["en-0", "qc-0", "de-0"]}
    )
    notification = _settled(notification_id)

    # Then each email and SMS reached the adapter exactly once, rendered in the right language
    deliveries = {
        (d.recipient.external_id, d.channel): d
        for d in Delivery.objects.filter(notification=notification).select_related("recipient")
    }
    assert {d.status for (_, c), d in deliveries.items() if c != "in_app"} == {"sent"}
    records = list(SinkRecord.objects.all())
    assert Counter(r.delivery_id for r in records) == Counter(
        {str(d.pk): 1 for (_, c), d in deliveries.items() if c != "in_app"}
    )
    by_delivery = {r.delivery_id: r for r in records}
    qc_email = by_delivery[str(deliveries[("qc-0", "email")].pk)]
    assert qc_email.to == "qc-0@example.com"
    assert qc_email.message["subject"] == "Commande A-7 expédiée"
    assert qc_email.message["text"] == "Bonjour Élodie, c'est parti."
    assert qc_email.message["metadata"]["template_version"] == 1
    de_email = by_delivery[str(deliveries[("de-0", "email")].pk)]
    assert de_email.message["subject"] == "Order A-7 shipped" and "<b>A-7</b>" in de_email.message["html"]
    assert by_delivery[str(deliveries[("qc-0", "sms")].pk)].to == "+15145550100"
    assert (deliveries[("qc-0", "email")].rendered or {})["locale"] == "fr"
    assert getattr(deliveries[("qc-0", "email")].template_version, "version", None) == 1
    assert DeliveryAttempt.objects.filter(delivery__notification=notification).count() == 6

    # And the in-app items are in each inbox, in each language
    token = api.post("/api/v1/recipients/qc-0/inbox-token/").json()["token"]
    browser = APIClient()
    browser.credentials(HTTP_AUTHORIZATION=f"Recipient {token}")
    (item,) = browser.get("/api/v1/inbox/").json()["results"]
    assert item["title"] == "Commande A-7 expédiée" and item["notification"] == notification_id

    detail = api.get(f"/api/v1/notifications/{notification_id}/").json()
    assert detail["counts"] == {"email": {"sent": 3}, "sms": {"sent": 3}, "in_app": {"delivered": 3}}


def test_opt_outs_and_unsubscribes_are_suppressed_and_critical_gets_through(
    worker, api, recording_tenant, tenant, make_template, make_recipients
):
    make_template(default_channels=["email"])
    make_template("password_reset", category="security", default_channels=["email"])
    Category.objects.filter(tenant=tenant, key="security").update(critical=True)
    make_recipients(1, prefix="out")
    make_recipients(1, prefix="gone", unsubscribed=True)
    api.put("/api/v1/recipients/out-0/preferences/", {"preferences": [{"channels": {"email": False}}]}, format="json")

    regular = _post(api, {"template": "order_shipped", "payload": {"order_id": "1"}, "recipients": ["out-0", "gone-0"]})
    critical = _post(
        api, {"template": "password_reset", "payload": {"order_id": "1"}, "recipients": ["out-0", "gone-0"]}
    )
    _settled(regular)
    _settled(critical)

    assert dict(
        Delivery.objects.filter(notification_id=regular).values_list("recipient__external_id", "suppression_reason")
    ) == {
        "out-0": "opted_out",
        "gone-0": "unsubscribed",
    }
    assert set(Delivery.objects.filter(notification_id=critical).values_list("status", flat=True)) == {"sent"}
    assert SinkRecord.objects.count() == 2


def test_quiet_hours_defer_until_the_window_ends_then_the_dispatcher_sends(
    worker, api, recording_tenant, make_template, make_recipients
):
    # Given a recipient in Tokyo whose quiet hours cover the present moment
    make_template(default_channels=["email", "in_app"])
    make_recipients(1, prefix="tokyo", timezone="Asia/Tokyo")
    local = timezone.now().astimezone(ZoneInfo("Asia/Tokyo"))
    start, end = (local - timedelta(hours=1)).strftime("%H:%M"), (local + timedelta(hours=1)).strftime("%H:%M")
    api.put(
        "/api/v1/recipients/tokyo-0/preferences/",
        {"preferences": [{"quiet_hours": {"start": start, "end": end}}]},
        format="json",
    )

    # When a notification is posted, the email waits and the inbox does not
    notification_id = _post(api, {"template": "order_shipped", "payload": {"order_id": "Q"}, "recipients": ["tokyo-0"]})
    _settled(notification_id, status="dispatched")
    email = wait_for(
        lambda: Delivery.objects.filter(notification_id=notification_id, channel="email", status="deferred").first()
    )
    end_utc = email.next_attempt_at
    assert end_utc is not None
    assert timedelta(minutes=58) < end_utc - timezone.now() < timedelta(minutes=61)
    assert Delivery.objects.get(notification_id=notification_id, channel="in_app").status == "delivered"
    assert dispatch_due()["deliveries"] == 0

    # Then, once the window has ended, the dispatcher publishes it and the worker sends it
    assert dispatch_due(now=end_utc + timedelta(seconds=1))["deliveries"] == 1
    _settled(notification_id)
    assert Delivery.objects.get(pk=email.pk).status == "sent"
    assert SinkRecord.objects.filter(delivery_id=str(email.pk)).count() == 1


def test_a_transient_failure_is_retried_by_the_dispatcher(
    worker, api, recording_tenant, make_template, make_recipients
):
    make_template(default_channels=["email"])
    make_recipients(1)
    notification_id = _post(
        api,
        {
            "template": "order_shipped",
            "payload": {"order_id": "R"},
            "recipients": ["user-0"],
            "metadata": {"sink_outcomes": ["transient", "accepted"]},
        },
    )
    pending = wait_for(lambda: Delivery.objects.filter(notification_id=notification_id, status="pending").first())
    retry_at = pending.next_attempt_at
    assert pending.attempts == 1 and retry_at is not None
    dispatch_due(now=retry_at + timedelta(seconds=1))
    _settled(notification_id)
    delivery = Delivery.objects.get(pk=pending.pk)
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("outcome", flat=True)) == [
        "transient",
        "accepted",
    ]
    assert SinkRecord.objects.filter(delivery_id=str(delivery.pk)).count() == 1


def test_idempotent_posts_send_once(worker, api, recording_tenant, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(2)
    body = {"template": "order_shipped", "payload": {"order_id": "I"}, "recipients": ["user-0", "user-1"]}
    first = _post(api, body, HTTP_IDEMPOTENCY_KEY="order-I")
    second = _post(api, body, HTTP_IDEMPOTENCY_KEY="order-I")
    assert first == second
    _settled(first)
    refused = api.post(
        "/api/v1/notifications/", {**body, "payload": {"order_id": "J"}}, format="json", HTTP_IDEMPOTENCY_KEY="order-I"
    )
    assert refused.status_code == 422
    assert SinkRecord.objects.count() == 2 and Notification.objects.count() == 1


def test_cancel_stops_deferred_and_scheduled_work(worker, api, recording_tenant, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(1, prefix="night", timezone="UTC")
    Preference.objects.create(
        tenant=recording_tenant,
        recipient=Recipient.objects.get(external_id="night-0"),
        quiet_hours_start=(timezone.now() - timedelta(hours=1)).time(),
        quiet_hours_end=(timezone.now() + timedelta(hours=1)).time(),
    )
    deferred = _post(api, {"template": "order_shipped", "payload": {"order_id": "C"}, "recipients": ["night-0"]})
    wait_for(lambda: Delivery.objects.filter(notification_id=deferred, status="deferred").exists())
    later = (timezone.now() + timedelta(hours=3)).isoformat()
    scheduled = _post(
        api,
        {"template": "order_shipped", "payload": {"order_id": "S"}, "recipients": ["night-0"], "scheduled_at": later},
    )

    assert api.post(f"/api/v1/notifications/{deferred}/cancel/").json()["deliveries_cancelled"] == 1
    assert api.post(f"/api/v1/notifications/{scheduled}/cancel/").json()["notification"]["status"] == "cancelled"
    assert dispatch_due(now=timezone.now() + timedelta(hours=4)) == {"notifications": 0, "deliveries": 0}
    assert not SinkRecord.objects.exists()
    assert not Delivery.objects.filter(notification_id=scheduled).exists()


def test_a_scheduled_notification_goes_out_when_due(worker, api, recording_tenant, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(1)
    at = timezone.now() + timedelta(minutes=30)
    notification_id = _post(
        api,
        {
            "template": "order_shipped",
            "payload": {"order_id": "T"},
            "recipients": ["user-0"],
            "scheduled_at": at.isoformat(),
        },
    )
    assert dispatch_due()["notifications"] == 0
    assert dispatch_due(now=at + timedelta(seconds=1))["notifications"] == 1
    _settled(notification_id)
    assert SinkRecord.objects.count() == 1


def test_a_topic_fans_out_in_several_chunks_on_the_worker(
    worker, api, recording_tenant, make_template, make_recipients, settings
):
    # Given 1,200 subscribers and chunks of 500 (planned here, where the setting applies; the
    # chunks and the sends run on the worker)
    make_template(default_channels=["email", "in_app"])
    recipients = make_recipients(1200)
    api.post("/api/v1/topics/", {"key": "all"}, format="json")
    api.post("/api/v1/topics/all/subscribers/", {"recipients": [r.external_id for r in recipients]}, format="json")
    later = (timezone.now() + timedelta(days=1)).isoformat()
    notification_id = _post(
        api,
        {
            "template": "order_shipped",
            "payload": {"order_id": "T"},
            "topic": "all",
            "priority": "bulk",
            "scheduled_at": later,
        },
    )
    Notification.objects.filter(pk=notification_id).update(status="accepted")
    settings.SIGNALBOX_NOTIFICATIONS = {**settings.SIGNALBOX_NOTIFICATIONS, "FANOUT_CHUNK_SIZE": 500}
    assert len(notification_fan_out(notification_id=notification_id)) == 3

    notification = _settled(notification_id, timeout=60)
    assert notification.recipient_count == 1200 and notification.chunks_total == 3
    assert Delivery.objects.filter(notification=notification, status="sent").count() == 1200
    assert Delivery.objects.filter(notification=notification, status="delivered").count() == 1200
    assert SinkRecord.objects.values("delivery_id").distinct().count() == SinkRecord.objects.count() == 1200
