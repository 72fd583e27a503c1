"""The dashboard's dead-letter links open the rows the figure counts: what went bad today, not every row ever."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.events.models import Event, WebhookEndpoint, WebhookMessage
from apps.observability.dashboard import Figure, dashboard_build
from apps.tasks.models import TaskExecution

pytestmark = pytest.mark.django_db

TWO_DAYS_AGO = timedelta(days=2)


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


@pytest.fixture
def gone_bad(tenant):
    """A webhook message failed and a tracked task dead today; one of each that went bad two days ago."""
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="http://127.0.0.1:9/hook", secret_encrypted="x")
    messages, tasks = [], []
    for _ in range(2):
        event = Event.objects.create(tenant=tenant, type="order.shipped")
        messages.append(
            WebhookMessage.objects.create(
                tenant=tenant, endpoint=endpoint, event=event, event_type=event.type, body="{}", status="failed"
            )
        )
        tasks.append(
            TaskExecution.objects.create(tenant=tenant, name="signalbox.exports.deliveries_csv", status="dead")
        )
    WebhookMessage.objects.filter(pk=messages[1].pk).update(updated_at=timezone.now() - TWO_DAYS_AGO)
    TaskExecution.objects.filter(pk=tasks[1].pk).update(updated_at=timezone.now() - TWO_DAYS_AGO)
    return {"message_today": messages[0], "message_old": messages[1], "task_today": tasks[0], "task_old": tasks[1]}


def _figure(label: str) -> Figure:
    return next(f for f in dashboard_build(with_queues=False).dead_letters if f.label == label)


@pytest.mark.parametrize(
    ("label", "changelist", "status"),
    [
        ("Webhook messages failed", "/admin/events/webhookmessage/", "failed"),
        ("Tracked tasks dead", "/admin/tasks/taskexecution/", "dead"),
    ],
)
def test_the_link_filters_on_the_same_status_and_day_as_the_count(gone_bad, label, changelist, status):
    board_since = dashboard_build(with_queues=False).since
    figure = _figure(label)

    url = urlsplit(figure.url)
    assert figure.count == 1
    assert url.path == changelist
    assert parse_qs(url.query) == {"status": [status], "updated_at__gte": [board_since.isoformat()]}


@pytest.mark.parametrize(
    ("label", "today", "old"),
    [("Webhook messages failed", "message_today", "message_old"), ("Tracked tasks dead", "task_today", "task_old")],
)
def test_following_the_link_lists_todays_row_and_not_the_older_one(staff_client, gone_bad, label, today, old):
    response = staff_client.get(_figure(label).url)

    assert response.status_code == 200  # the admin redirects unknown filters to ?e=1
    listing = response.content.decode()
    assert str(gone_bad[today].pk) in listing
    assert str(gone_bad[old].pk) not in listing
