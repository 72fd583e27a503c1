"""Scheduled sends: nothing goes out before `scheduled_at`; cancel or reschedule until due; the
dispatcher takes due intents in batches (SKIP LOCKED, a partial index), once each even when two
dispatchers (two beats) run at the same moment."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from apps.notifications.models import Delivery, Notification, SinkRecord, Topic
from apps.notifications.services.dispatch import dispatch_due
from apps.notifications.services.notifications import notification_create
from apps.observability.models import AuditEntry
from tests.conftest import wait_for


def _schedule(api: Any, at: Any, recipients: list[str] | None = None) -> dict[str, Any]:
    response = api.post(
        "/api/v1/notifications/",
        {
            "template": "order_shipped",
            "payload": {"order_id": "S-1"},
            "recipients": recipients or ["user-0"],
            "channels": ["email"],
            "scheduled_at": at.isoformat(),
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "scheduled"
    return dict(response.json())


@pytest.mark.worker
def test_nothing_goes_out_before_scheduled_at_and_it_goes_out_once_due(
    worker, api, recording_tenant, make_template, make_recipients
):
    make_template(default_channels=["email"])
    make_recipients(1)
    at = timezone.now() + timedelta(seconds=3)
    created = _schedule(api, at)

    # Before its time, the dispatcher (however often it runs) does not take it
    assert dispatch_due()["notifications"] == 0
    time.sleep(0.5)
    assert not Delivery.objects.filter(notification_id=created["id"]).exists()
    assert Notification.objects.get(pk=created["id"]).status == "scheduled"

    # Once due, the next dispatcher run takes it, and it is sent once
    wait_for(lambda: timezone.now() >= at, timeout=10)
    assert dispatch_due()["notifications"] == 1
    # The sink keeps the message during the provider call; the send is recorded just after it.
    delivery = wait_for(
        lambda: Delivery.objects.filter(notification_id=created["id"], sent_at__isnull=False).first(), timeout=30
    )
    [record] = SinkRecord.objects.filter(to="user-0@example.com")
    assert record.delivery_id == str(delivery.pk)
    assert delivery.sent_at is not None and delivery.created_at >= at and delivery.sent_at >= at
    assert dispatch_due()["notifications"] == 0


@pytest.mark.django_db
def test_a_scheduled_notification_is_rescheduled_through_the_api(api, tenant, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(1)
    created = _schedule(api, timezone.now() + timedelta(hours=1))
    later = timezone.now() + timedelta(days=2)

    response = api.patch(f"/api/v1/notifications/{created['id']}/reschedule/", {"scheduled_at": later.isoformat()})
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "scheduled"
    assert Notification.objects.get(pk=created["id"]).scheduled_at == later
    # POST works the same way, and the change is audited
    sooner = timezone.now() + timedelta(minutes=5)
    response = api.post(
        f"/api/v1/notifications/{created['id']}/reschedule/", {"scheduled_at": sooner.isoformat()}, format="json"
    )
    assert response.status_code == 200
    entry = AuditEntry.objects.filter(action="notification.rescheduled", target_id=created["id"]).latest("id")
    assert entry.data["to"] == sooner.isoformat()

    # Moved to a past time: taken by the next dispatcher run
    past = timezone.now() - timedelta(minutes=1)
    api.post(f"/api/v1/notifications/{created['id']}/reschedule/", {"scheduled_at": past.isoformat()}, format="json")
    assert dispatch_due()["notifications"] == 1

    # Once taken, it cannot move any more
    response = api.post(
        f"/api/v1/notifications/{created['id']}/reschedule/", {"scheduled_at": later.isoformat()}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "not_reschedulable"


@pytest.mark.django_db
def test_rescheduling_is_validated_and_scoped_to_the_tenant(api, other_api, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(1)
    created = _schedule(api, timezone.now() + timedelta(hours=1))
    url = f"/api/v1/notifications/{created['id']}/reschedule/"

    missing = api.post(url, {}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "validation_error"
    assert api.post(url, {"scheduled_at": "next tuesday"}, format="json").status_code == 400
    assert other_api.post(url, {"scheduled_at": timezone.now().isoformat()}, format="json").status_code == 404


@pytest.mark.worker
def test_a_notification_cancelled_before_its_time_never_goes_out(
    worker, api, recording_tenant, make_template, make_recipients
):
    make_template(default_channels=["email"])
    make_recipients(1)
    created = _schedule(api, timezone.now() + timedelta(seconds=1))

    assert api.post(f"/api/v1/notifications/{created['id']}/cancel/").status_code == 200

    time.sleep(1.5)
    assert dispatch_due()["notifications"] == 0
    time.sleep(0.5)
    assert not Delivery.objects.filter(notification_id=created["id"]).exists()
    assert not SinkRecord.objects.exists()


@pytest.mark.worker
def test_two_dispatchers_at_once_take_each_due_notification_exactly_once(worker, tenant, make_template):
    # Given 300 due scheduled notifications (two beats fire the dispatcher at the same moment),
    # to a topic nobody follows, so that their fan-outs are quick
    make_template(default_channels=["email"])
    Topic.objects.create(tenant=tenant, key="nobody")
    at = timezone.now() + timedelta(hours=1)
    for n in range(300):
        notification_create(
            tenant=tenant, template="order_shipped", payload={"order_id": str(n)}, topic="nobody", scheduled_at=at
        )
    Notification.objects.update(scheduled_at=timezone.now() - timedelta(seconds=1))  # time passes
    taken: list[int] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            barrier.wait()
            taken.append(dispatch_due()["notifications"])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then between them they took each notification once, and nothing is left for a third run
    assert sum(taken) == 300
    assert dispatch_due()["notifications"] == 0
    assert not Notification.objects.filter(status="scheduled").exists()
    wait_for(lambda: Notification.objects.filter(status="completed").count() == 300, timeout=60)


@pytest.mark.django_db
def test_the_due_query_reads_the_partial_index_among_many_future_rows(tenant, make_template, make_recipients):
    # Given many notifications scheduled far ahead and a few accepted ones
    make_template(default_channels=["email"])
    make_recipients(1)
    template_notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "0"}, recipients=["user-0"]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO notifications_notification
                (id, tenant_id, template_id, template_version_id, category_id, payload, recipient_ids, channels,
                 priority, scheduled_at, dedup_key, dedup_window_seconds, idempotency_key, metadata, status, error,
                 chunks_total, created_at, updated_at)
            SELECT gen_random_uuid(), tenant_id, template_id, template_version_id, category_id, payload,
                   recipient_ids, channels, priority, now() + (g || ' minutes')::interval, '', 0, '', '{}',
                   'scheduled', '', 0, now(), now()
            FROM notifications_notification, generate_series(1, 50000) AS g WHERE id = %s
            """,
            [template_notification.pk],
        )
        cursor.execute("ANALYZE notifications_notification")

    # When the dispatcher's query is planned
    query = (
        Notification.objects.filter(status=Notification.Status.SCHEDULED, scheduled_at__lte=timezone.now())
        .order_by("scheduled_at")
        .only("pk", "priority")[:500]
    )
    plan = query.explain()

    # Then it walks the partial index on scheduled_at (WHERE status = 'scheduled'), not the table
    assert "notif_notification_due" in plan, plan
    assert "Seq Scan" not in plan, plan
