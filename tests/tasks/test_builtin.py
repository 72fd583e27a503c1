"""The task types Signalbox ships: the deliveries CSV export and the resend of failed deliveries."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.notifications.models import Category, Delivery, Notification, Recipient
from tests.tasks.conftest import poll_finished, start_task

pytestmark = pytest.mark.worker


@pytest.fixture
def deliveries(tenant, other_tenant):
    """Six deliveries of one notification in various states, and one of another tenant."""

    def make(owner, external_id, channel, status, **fields):
        category, _ = Category.objects.get_or_create(tenant=owner, key="orders")
        notification = Notification.objects.filter(tenant=owner).first() or Notification.objects.create(
            tenant=owner, category=category, channels=["email", "sms"], status="completed"
        )
        recipient, _ = Recipient.objects.get_or_create(tenant=owner, external_id=external_id)
        return Delivery.objects.create(
            tenant=owner, notification=notification, recipient=recipient, channel=channel, status=status, **fields
        )

    return {
        "sent": make(tenant, "u1", "email", "sent", provider="sendgrid", sent_at=timezone.now()),
        "failed_email": make(tenant, "u2", "email", "failed", error_code="bounced", last_error="mailbox full"),
        "dead_email": make(tenant, "=HYPERLINK(evil)", "email", "dead", last_error="gave up"),
        "dead_sms": make(tenant, "u4", "sms", "dead"),
        "queued": make(tenant, "u5", "sms", "queued"),
        "old_failed": make(tenant, "u6", "email", "failed", created_at=timezone.now() - timedelta(days=40)),
        "other_tenant": make(other_tenant, "x1", "email", "failed"),
    }


def _csv(api, done):
    download = api.get(done["download_url"], HTTP_ACCEPT="text/csv")
    assert download.status_code == 200
    assert download["Content-Type"] == "text/csv"
    return list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))


def test_deliveries_csv_exports_the_tenants_matching_deliveries_with_progress(api, deliveries, worker):
    since = (timezone.now() - timedelta(days=7)).isoformat()
    started = start_task(
        api,
        "signalbox.exports.deliveries_csv",
        {"status": ["failed", "dead"], "channel": ["email"], "created_after": since},
    )

    done = poll_finished(api, started["id"])

    assert done["status"] == "succeeded", done
    assert done["progress"]["percent"] == 100.0
    assert done["result"]["rows"] == 2
    rows = _csv(api, done)
    assert {row["id"] for row in rows} == {str(deliveries["failed_email"].pk), str(deliveries["dead_email"].pk)}
    by_id = {row["id"]: row for row in rows}
    assert by_id[str(deliveries["failed_email"].pk)]["last_error"] == "mailbox full"
    # A spreadsheet would run this as a formula; the export neutralises it.
    assert by_id[str(deliveries["dead_email"].pk)]["recipient_external_id"] == "'=HYPERLINK(evil)"

    everything = poll_finished(api, start_task(api, "signalbox.exports.deliveries_csv")["id"])
    assert everything["result"]["rows"] == 6
    assert str(deliveries["other_tenant"].pk) not in {row["id"] for row in _csv(api, everything)}


def test_the_export_refuses_another_tenants_notification_before_queueing(api, other_api, deliveries):
    response = other_api.post(
        "/api/v1/tasks/",
        {
            "name": "signalbox.exports.deliveries_csv",
            "input": {"notification": str(deliveries["sent"].notification_id)},
        },
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["fields"] == {"input": {"notification": ["No such notification."]}}


def test_resend_only_accepts_failed_and_dead(api, deliveries):
    response = api.post(
        "/api/v1/tasks/",
        {"name": "signalbox.notifications.resend_deliveries", "input": {"status": ["sent"]}},
        format="json",
    )

    assert response.status_code == 400
    assert "status" in response.json()["fields"]["input"]


def test_resend_replays_the_matching_failed_and_dead_deliveries(api, deliveries, worker):
    started = start_task(api, "signalbox.notifications.resend_deliveries", {"channel": ["email"]})

    done = poll_finished(api, started["id"])

    assert done["status"] == "succeeded", done
    assert done["result"] == {"matched": 3, "replayed": 3}
    assert done["progress"]["percent"] == 100.0
    replayed = {"failed_email", "dead_email", "old_failed"}
    for key, delivery in deliveries.items():
        delivery.refresh_from_db()
        if key in replayed:
            assert delivery.status not in ("failed", "dead"), key
    assert deliveries["dead_sms"].status == "dead"
    assert deliveries["other_tenant"].status == "failed"
