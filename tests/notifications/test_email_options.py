"""What a notification's emails carry besides their content: one-click unsubscribe, tracking,
reply-to and extra headers, from the tenant's settings. The composer that turns these into
headers, pixels and links is tested with each provider (tests/providers/)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.notifications.models import Category, Delivery, SinkRecord
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.sending import deliveries_send

pytestmark = pytest.mark.django_db


def sent_email(tenant: Any, make_template: Any, make_recipients: Any, *, category: str = "orders") -> dict[str, Any]:
    make_template(default_channels=["email"], category=category)
    [recipient] = make_recipients(1)
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "A-1"}, recipients=["user-0"]
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    ids = list(Delivery.objects.filter(notification=notification, status="queued").values_list("pk", flat=True))
    deliveries_send(delivery_ids=ids)
    record = SinkRecord.objects.get(delivery_id=str(ids[0]))
    return {**record.message, "recipient_pk": str(recipient.pk)}


def set_email_settings(tenant: Any, **email: Any) -> None:
    tenant.settings = {**tenant.settings, "email": email}
    tenant.save(update_fields=["settings"])


def test_by_default_an_email_offers_one_click_unsubscribe_from_its_category_and_tracks_nothing(
    recording_tenant, make_template, make_recipients
):
    message = sent_email(recording_tenant, make_template, make_recipients)

    assert message["list_unsubscribe"] is True
    assert (message["recipient_id"], message["category"]) == (message["recipient_pk"], "orders")
    assert (message["track_opens"], message["track_clicks"]) == (False, False)
    assert message["reply_to"] == "" and message["headers"] == {}


def test_a_critical_category_offers_no_unsubscribe(recording_tenant, make_template, make_recipients):
    Category.objects.create(tenant=recording_tenant, key="security", critical=True)

    message = sent_email(recording_tenant, make_template, make_recipients, category="security")

    assert message["list_unsubscribe"] is False


def test_the_tenants_settings_turn_on_tracking_and_set_reply_to_and_safe_headers(
    recording_tenant, make_template, make_recipients
):
    set_email_settings(
        recording_tenant,
        list_unsubscribe=False,
        track_opens=True,
        track_clicks=True,
        reply_to="support@acme.test",
        headers={
            "X-Campaign": "autumn",
            "Bcc": "everyone@example.com",  # would redirect mail: dropped
            "X-Injected": "a\r\nBcc: everyone@example.com",  # header injection: dropped
            "Bad Name": "x",  # not a header name: dropped
        },
    )

    message = sent_email(recording_tenant, make_template, make_recipients)

    assert (message["track_opens"], message["track_clicks"], message["list_unsubscribe"]) == (True, True, False)
    assert message["reply_to"] == "support@acme.test"
    assert message["headers"] == {"X-Campaign": "autumn"}


def test_a_reply_to_that_is_not_one_address_is_ignored(recording_tenant, make_template, make_recipients):
    set_email_settings(recording_tenant, reply_to="support@acme.test\r\nBcc: everyone@example.com")

    assert sent_email(recording_tenant, make_template, make_recipients)["reply_to"] == ""
