"""The operations dashboard in admin: today's numbers, each linking to the admin list it counts."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.notifications.models import Category, Delivery, Notification, Recipient
from apps.observability.dashboard import dashboard_build, start_of_today, uuid7_floor
from apps.tasks.models import TaskExecution

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/observability/operationsdashboard/"


@pytest.fixture
def staff_client() -> Client:
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def today(tenant):
    """Two notifications today (one yesterday), deliveries sent / dead / queued, one running task."""
    category = Category.objects.create(tenant=tenant, key="orders")
    recipients = [Recipient.objects.create(tenant=tenant, external_id=f"r{i}") for i in range(3)]
    first = Notification.objects.create(tenant=tenant, category=category, channels=["email"])
    Notification.objects.create(tenant=tenant, category=category, channels=["email"])
    for recipient, status in zip(recipients, ("sent", "dead", "queued"), strict=True):
        Delivery.objects.create(tenant=tenant, notification=first, recipient=recipient, channel="email", status=status)
    TaskExecution.objects.create(tenant=tenant, name="signalbox.exports.deliveries_csv", status="running")
    return first


def test_uuid7_floor_orders_with_ids_made_at_that_time():
    from apps.notifications.models import uuid7

    before = timezone.now() - timedelta(milliseconds=5)
    made = uuid7()
    assert uuid7_floor(before) <= made < uuid7_floor(timezone.now() + timedelta(seconds=1))


def test_todays_counts(today):
    board = dashboard_build(with_queues=False)

    assert board.since == start_of_today()
    assert {f.label: f.count for f in board.intents}["Notifications"] == 2
    deliveries = {f.label: f.count for f in board.deliveries}
    assert (deliveries["Sent"], deliveries["Dead"], deliveries["Queued"], deliveries["Failed"]) == (1, 1, 1, 0)
    assert {f.label: f.count for f in board.dead_letters}["Deliveries dead (out of attempts)"] == 1
    assert {f.label: f.count for f in board.tasks}["Tracked tasks running"] == 1


def test_the_admin_index_links_the_dashboard_and_every_number_links_a_working_list(staff_client, today):
    index = staff_client.get("/admin/")
    assert DASHBOARD.encode() in index.content and b"Operations dashboard" in index.content

    page = staff_client.get(DASHBOARD)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Intents accepted today" in html and "Queues" in html and "notifications.high" in html
    links = {unescape(href) for href in re.findall(r'href="(/admin/[^"]+\?[^"]+)"', html)}
    assert len(links) >= 15
    for link in links:
        response = staff_client.get(link)
        # The admin answers an unknown filter with a redirect to ?e=1: every link must be a real filter.
        assert response.status_code == 200, link

    dead = next(link for link in links if "delivery" in link and "status=dead" in link)
    listing = staff_client.get(dead).content.decode()
    assert str(Delivery.objects.get(status="dead").pk) in listing
    assert str(Delivery.objects.get(status="sent").pk) not in listing


def test_the_dashboard_is_for_staff_only(client, today):
    assert client.get(DASHBOARD).status_code == 302  # to the admin login
    assert staff_client_for_non_staff().get(DASHBOARD).status_code == 302


def staff_client_for_non_staff() -> Client:
    user = get_user_model().objects.create_user("someone", "someone@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client
