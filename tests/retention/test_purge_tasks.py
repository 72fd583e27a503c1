"""The purge through the real worker: a dry run started from the API and polled like any task (the
caller's tenant only), and the hourly beat jobs whose result is the report."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.events.models import Event, WebhookAttempt, WebhookEndpoint, WebhookMessage
from apps.events.tasks import purge_events
from apps.notifications.models import Delivery
from tests.conftest import wait_for

pytestmark = pytest.mark.worker


def _run(api, data):
    response = api.post("/api/v1/tasks/", {"name": "signalbox.maintenance.retention_purge", "input": data})
    assert response.status_code == 202, response.json()
    url = response["Location"]
    return wait_for(
        lambda: (body := api.get(url).json())["status"] in ("succeeded", "failed", "dead") and body, timeout=60
    )


def test_an_operator_runs_a_dry_run_from_the_api_then_the_purge(worker, api, build, other_tenant):
    build.deliveries(build.notification(), ["sent", "sent", "queued"])
    theirs = build.deliveries(build.notification(for_tenant=other_tenant), ["sent"])

    dry = _run(api, {"dry_run": True, "tables": ["deliveries", "notifications"]})

    assert dry["status"] == "succeeded", dry
    assert dry["result"]["dry_run"] is True
    assert dry["result"]["deleted"] == {"deliveries": 2, "notifications": 0}
    assert Delivery.objects.count() == 4

    done = _run(api, {"dry_run": False, "tables": ["deliveries"]})

    assert done["result"]["deleted"] == {"deliveries": 2}
    assert sorted(Delivery.objects.values_list("status", flat=True)) == ["queued", "sent"]
    assert Delivery.objects.filter(pk=theirs[0].pk).exists()  # another tenant's rows are not the caller's


def test_the_input_is_validated(worker, api):
    response = api.post(
        "/api/v1/tasks/", {"name": "signalbox.maintenance.retention_purge", "input": {"tables": ["nope"]}}
    )
    assert response.status_code == 400
    assert "tables" in response.json()["fields"]["input"]


def test_the_hourly_job_reports_rows_purged_per_table(worker, build):
    from apps.core.retention_tasks import purge_expired_rows

    build.deliveries(build.notification(), ["sent"] * 3, attempts=1)

    report = purge_expired_rows.apply_async().get(timeout=60)

    assert report["deleted"]["deliveries"] == 3
    assert report["cascaded"] == {"notifications.DeliveryAttempt": 3}
    assert report["complete"] is True
    assert not Delivery.objects.exists()


def test_the_hourly_events_purge_reports_rows_purged_per_table(worker, tenant):
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/hook", secret_encrypted="x")
    for _ in range(2):
        event = Event.objects.create(tenant=tenant, type="order.shipped", status="processed")
        message = WebhookMessage.objects.create(
            tenant=tenant, endpoint=endpoint, event=event, event_type=event.type, body="{}", status="delivered"
        )
        WebhookAttempt.objects.create(tenant=tenant, message=message, number=1, outcome="success")
    Event.objects.update(created_at=timezone.now() - timedelta(days=40))

    report = purge_events.apply_async().get(timeout=60)

    assert report["deleted"] == {"events": 2}
    assert report["cascaded"] == {"events.WebhookMessage": 2, "events.WebhookAttempt": 2}
    assert report["complete"] is True
    assert not Event.objects.exists()
