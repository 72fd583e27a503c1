"""Events and webhooks fixtures: a local receiver, endpoints registered through the API, fast retries."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

os.environ["SIGNALBOX_TEST_TASKS"] = "1"  # before the session worker starts: rules may start test tasks

import apps.tasks.testing  # noqa: F401  (registers the test task types in this process too)
from tests.events.receiver import Receiver


def _work_in_flight() -> bool:
    from django.utils import timezone

    from apps.events.models import Event, WebhookMessage
    from apps.notifications.models import Notification
    from apps.tasks.models import ACTIVE, TaskExecution
    from apps.workflows.models import TransitionIntent

    soon = timezone.now() + timedelta(seconds=5)
    return (
        Event.objects.filter(status="pending").exists()
        or TransitionIntent.objects.filter(status="pending").exists()
        or WebhookMessage.objects.filter(status="sending").exists()
        or WebhookMessage.objects.filter(status="pending", next_attempt_at__lte=soon).exists()
        or Notification.objects.filter(status__in=["accepted", "fanning_out", "dispatched"]).exists()
        or TaskExecution.objects.filter(status__in=ACTIVE).exists()
    )


@pytest.fixture(autouse=True)
def settle_worker(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test with a worker, waits (up to 20 s) for what it set in motion to finish: the
    database flush that ends a transactional test deadlocks with a worker still writing."""
    uses_worker = bool({"worker", "start_worker"} & set(request.fixturenames))
    if uses_worker:
        request.getfixturevalue("transactional_db")  # set up first, so torn down (flushed) after the wait
    yield
    if not uses_worker:
        return
    deadline = time.monotonic() + 20
    while _work_in_flight() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fast_retries(tenant: Any) -> Any:
    """Retries 1 s apart (three attempts in all) and a 2 s timeout, for this tenant only."""
    tenant.settings = {**tenant.settings, "webhooks": {"retry_schedule": [0, 1, 1], "timeout_seconds": 2}}
    tenant.save(update_fields=["settings"])
    return tenant


def register_endpoint(client: Any, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/webhook-endpoints/", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.json()
    return dict(response.json())


def record_event(client: Any, type: str, subject_id: str = "42", **payload: Any) -> dict[str, Any]:
    body = {"type": type, "subject": {"type": type.split(".")[0], "id": subject_id}, "payload": payload}
    response = client.post("/api/v1/events/", body, format="json")
    assert response.status_code == 202, response.json()
    return dict(response.json())


def notification_settled(notification_id: Any) -> Any:
    """Waits until the notifications pipeline is done with it, so no work outlives the test."""
    from apps.notifications.models import Notification
    from tests.conftest import wait_for

    return wait_for(
        lambda: Notification.objects.filter(
            pk=notification_id, status__in=["completed", "failed", "cancelled"]
        ).first(),
        message=f"notification {notification_id} to settle",
    )
