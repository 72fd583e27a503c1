"""The sweeper's pace follows the backlog: one run takes back every stuck row, batch after batch of
SWEEP_BATCH_SIZE, until none is left or its time budget is spent (a lost million-recipient send
no longer needs hours at a fixed 1,000 rows per 30 s).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from apps.notifications.models import Delivery, Recipient, uuid7
from apps.notifications.services.bulk import deliveries_insert
from apps.notifications.services.dispatch import sweep
from apps.notifications.services.recipients import recipients_upsert
from tests.reliability.conftest import send

STUCK = 5000


@pytest.fixture
def lost_sends(tenant: Any) -> Any:
    """5,000 deliveries queued an hour ago whose send messages the broker lost."""
    notification = send(tenant, [{"external_id": "seed", "email": "seed@example.com"}], ["email"])
    recipients_upsert(
        tenant=tenant, items=[{"external_id": f"r{i}", "email": f"r{i}@example.com"} for i in range(STUCK)]
    )
    ids = Recipient.objects.filter(tenant=tenant).exclude(external_id="seed").values_list("pk", flat=True)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    with transaction.atomic():
        deliveries_insert(
            [
                {
                    "id": uuid7(),
                    "tenant_id": tenant.pk,
                    "notification_id": notification.pk,
                    "recipient_id": pk,
                    "channel": "email",
                    "status": "queued",
                    "queued_at": an_hour_ago,
                    "created_at": an_hour_ago,
                }
                for pk in ids
            ]
        )
    return notification


def test_one_sweep_takes_back_every_lost_send_in_batches(lost_sends: Any):
    result = sweep(limit=1000)

    assert result.queued == STUCK
    assert Delivery.objects.filter(notification=lost_sends, status="pending").count() == STUCK


def test_a_spent_time_budget_stops_after_one_batch_and_the_next_run_goes_on(lost_sends: Any):
    assert sweep(limit=1000, budget=0).queued == 1000
    assert sweep(limit=1000).queued == STUCK - 1000
    assert not Delivery.objects.filter(notification=lost_sends, status="queued").exists()


def test_the_batch_size_and_budget_are_settings(lost_sends: Any, settings: Any):
    settings.SIGNALBOX_NOTIFICATIONS = {
        **settings.SIGNALBOX_NOTIFICATIONS,
        "SWEEP_BATCH_SIZE": 2000,
        "SWEEP_TIME_BUDGET_SECONDS": 0.000001,
    }
    assert sweep().queued == 2000
