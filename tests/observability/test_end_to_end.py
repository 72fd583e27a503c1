"""One notification, end to end through the API and a real worker: the metrics move where they should,
the worker's log lines carry the request id that caused them, and no contact detail is logged."""

from __future__ import annotations

import json

import pytest

from apps.notifications.models import Delivery, Notification, Recipient
from apps.notifications.services.recipients import recipients_upsert
from apps.notifications.services.templates import template_create
from tests.conftest import wait_for
from tests.observability.conftest import Samples, free_port, parse_metrics, scrape

pytestmark = pytest.mark.worker

QUEUE = "notifications.default"  # a normal-priority notification fans out and sends here


@pytest.fixture
def order_shipped(tenant):
    """An email template, one recipient, and the tenant's email going to the recording sink adapter."""
    tenant.settings = {**tenant.settings, "channel_providers": {"email": ["recording_sink"]}}
    tenant.save(update_fields=["settings"])
    template_create(
        tenant=tenant,
        key="order_shipped",
        definition={
            "category": "orders",
            "variables": [{"name": "order_id", "example": "A-1"}],
            "default_channels": ["email"],
            "content": {"default": {"email": {"subject": "Order {{ order_id }} shipped", "text": "On its way."}}},
        },
    )
    recipients_upsert(
        tenant=tenant, items=[{"external_id": "e2e-0", "email": "e2e-0@example.com", "phone": "+14155550142"}]
    )
    return Recipient.objects.get(tenant=tenant, external_id="e2e-0")


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in samples.items() if sample == name and wanted <= sample_labels
    )


def test_a_notification_moves_the_metrics_and_its_request_id_reaches_the_worker_log(
    start_worker, own_queue, api, tenant, order_shipped, tmp_path
):
    own_queue(QUEUE)
    port = free_port()
    worker = start_worker(
        queues=QUEUE,
        concurrency=2,
        LOG_FORMAT="json",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        WORKER_METRICS_PORT=str(port),
    )
    worker_metrics = f"http://127.0.0.1:{port}/metrics"
    recipient = order_shipped
    api_before = parse_metrics(api.get("/metrics").content.decode())
    wait_for(lambda: _scrape(worker_metrics) is not None, message="the worker's metrics endpoint")
    worker_before = scrape(worker_metrics)

    # When a client posts one notification with its own request id
    response = api.post(
        "/api/v1/notifications/",
        {"template": "order_shipped", "payload": {"order_id": "A-1"}, "recipients": ["e2e-0"]},
        format="json",
        HTTP_X_REQUEST_ID="req-e2e-42",
    )
    assert response.status_code == 202, response.json()
    wait_for(lambda: Notification.objects.filter(pk=response.json()["id"], status="completed").exists(), timeout=30)

    # Then the API counted the intent and the 202
    api_after = parse_metrics(api.get("/metrics").content.decode())
    assert total(api_after, "signalbox_intents_accepted_total", kind="notification") == (
        total(api_before, "signalbox_intents_accepted_total", kind="notification") + 1
    )
    assert total(api_after, "django_http_responses_total_by_status_total", status="202") >= 1 + total(
        api_before, "django_http_responses_total_by_status_total", status="202"
    )
    assert total(api_after, "signalbox_celery_tasks_published_total", task="signalbox.notifications.fan_out") >= 1

    # And the worker counted the send: one email accepted, its attempt, its latency, the tasks it ran
    sent_before = total(worker_before, "signalbox_deliveries_total", channel="email", status="sent")
    wait_for(
        lambda: (
            total(scrape(worker_metrics), "signalbox_deliveries_total", channel="email", status="sent") > sent_before
        ),
        message="the delivery to be counted",
    )
    after = scrape(worker_metrics)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(worker_before, name, **labels)

    assert moved("signalbox_deliveries_total", channel="email", status="sent") == 1
    assert moved("signalbox_delivery_attempts_total", channel="email", outcome="accepted") == 1
    assert moved("signalbox_delivery_latency_seconds_count", channel="email") == 1
    assert moved("signalbox_dead_letters_total") == 0
    assert moved("signalbox_celery_tasks_total", task="signalbox.notifications.fan_out", state="success") == 1
    assert moved("signalbox_celery_tasks_total", task="signalbox.notifications.send_batch", state="success") >= 1
    assert total(after, "signalbox_worker_active_tasks", queue=QUEUE) == 0

    # And every line the worker wrote for those tasks carries the request id and the tenant
    lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    caused = [line for line in lines if line.get("request_id") == "req-e2e-42"]
    assert {line.get("task_name") for line in caused} >= {
        "signalbox.notifications.fan_out",
        "signalbox.notifications.send_batch",
    }
    received = {line["task_name"] for line in caused if line["event"] == "task received"}
    assert received >= {"signalbox.notifications.fan_out", "signalbox.notifications.send_batch"}
    assert not [line for line in lines if "Signal handler" in line["event"]]
    assert any(line["logger"] == "celery.app.trace" and "succeeded" in line["event"] for line in caused)
    assert {line["tenant"] for line in caused} == {str(tenant.pk)}
    # And the provider's answer is logged with the notification and delivery it was for
    [answered] = [line for line in caused if line["event"] == "provider answered" and line["channel"] == "email"]
    delivery = Delivery.objects.get(notification_id=response.json()["id"], channel="email")
    assert (answered["notification_id"], answered["delivery_id"]) == (response.json()["id"], str(delivery.pk))
    assert answered["outcomes"] == {"accepted": 1}
    # And the recipient's contact details appear nowhere in the worker's log
    text = worker.log_path.read_text()
    assert recipient.email not in text and recipient.phone not in text


def _scrape(url: str) -> Samples | None:
    try:
        return scrape(url)
    except OSError:
        return None
