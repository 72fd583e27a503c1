"""Permanent task names and queues, the beat jobs, priority routing, and the OpenAPI schema."""

from __future__ import annotations

import pytest

from apps.core.periodic import periodic_jobs
from apps.notifications import tasks
from apps.notifications.models import Notification
from workers.queues import PRIORITY_QUEUES

PINNED = {
    tasks.fan_out: ("signalbox.notifications.fan_out", "notifications.default"),
    tasks.fan_out_chunk: ("signalbox.notifications.fan_out_chunk", "notifications.default"),
    tasks.send_batch: ("signalbox.notifications.send_batch", "notifications.default"),
    tasks.dispatch_due: ("signalbox.notifications.dispatch_due", "maintenance"),
    tasks.sweep: ("signalbox.notifications.sweep", "maintenance"),
}


@pytest.mark.parametrize(("task", "expected"), PINNED.items(), ids=lambda v: getattr(v, "name", ""))
def test_task_names_and_queues_are_permanent(task, expected):
    assert (task.name, task.queue) == expected


def test_the_dispatcher_and_sweeper_are_beat_jobs():
    jobs = {job.task: job for job in periodic_jobs()}
    assert jobs["signalbox.notifications.dispatch_due"].every_seconds <= 10
    assert jobs["signalbox.notifications.sweep"].queue == "maintenance"


@pytest.mark.django_db
@pytest.mark.parametrize("priority", ["high", "normal", "bulk"])
def test_fan_out_and_sends_go_to_the_priority_queue(
    api, make_template, make_recipients, monkeypatch, priority, django_capture_on_commit_callbacks
):
    make_template(default_channels=["email"])
    make_recipients(1)
    published: list[tuple[str, str]] = []
    for task in (tasks.fan_out, tasks.fan_out_chunk, tasks.send_batch):
        monkeypatch.setattr(
            task, "apply_async", lambda args=(), task=task, **kw: published.append((task.name, kw["queue"]))
        )
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/notifications/",
            {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"], "priority": priority},
            format="json",
        )
    assert published == [("signalbox.notifications.fan_out", PRIORITY_QUEUES[priority])]
    with django_capture_on_commit_callbacks(execute=True):
        tasks.fan_out(response.json()["id"])
    assert published[-1] == ("signalbox.notifications.send_batch", PRIORITY_QUEUES[priority])
    assert Notification.objects.get().priority == priority


@pytest.mark.django_db
def test_every_endpoint_is_in_the_openapi_schema(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path in (
        "/api/v1/notifications/",
        "/api/v1/notifications/{id}/cancel/",
        "/api/v1/deliveries/{id}/",
        "/api/v1/recipients/bulk/",
        "/api/v1/recipients/{external_id}/preferences/",
        "/api/v1/recipients/{external_id}/inbox-token/",
        "/api/v1/recipients/{external_id}/devices/",
        "/api/v1/topics/{key}/subscribers/",
        "/api/v1/templates/{key}/preview/",
        "/api/v1/templates/{key}/versions/",
        "/api/v1/preferences/defaults/",
        "/api/v1/inbox/",
        "/api/v1/inbox/unread-count/",
        "/api/v1/inbox/{id}/read/",
        "/api/v1/categories/",
    ):
        assert path in paths, path
    create = paths["/api/v1/notifications/"]["post"]
    assert "202" in create["responses"] and create["requestBody"]["content"]["application/json"]["examples"]
    inbox = paths["/api/v1/inbox/"]["get"]
    assert {"RecipientToken": []} in inbox["security"]
