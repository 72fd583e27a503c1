"""The send path's statements prune the deliveries' monthly partitions (docs/partitions.md): a send
message names its deliveries' notifications, and the claim, the lease renewal and the outcome
UPDATE look only in those notifications' months. A message from before (delivery ids only) still
claims, probing every partition."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.core.partitions import partitions, partitions_ensure
from apps.notifications.models import Delivery
from apps.notifications.services.bulk import deliveries_record, uuid_array
from apps.notifications.services.sending import deliveries_claim, deliveries_keep_lease
from tests.retention.test_partitions import _deliveries_made_at, _notification_made_at

pytestmark = pytest.mark.django_db

DELIVERIES = Delivery._meta.db_table


def _partitions_scanned(sql: str, params: list) -> int:
    """How many of the deliveries' partitions the plan of `sql` touches (rolled back): the distinct
    relations its nodes read, whatever scan the planner picks for each (a bitmap scan is two nodes)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        (plan,) = cursor.fetchone()
        transaction.set_rollback(True)
    if isinstance(plan, str):
        plan = json.loads(plan)
    relations: set[str] = set()

    def walk(node: dict) -> None:
        if str(node.get("Relation Name", "")).startswith(f"{DELIVERIES}_"):
            relations.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return len(relations)


@pytest.fixture
def old_delivery(build):
    """A queued delivery whose notification was made 70 days ago: its rows sit in that month's partition."""
    old = timezone.now() - timedelta(days=70)
    partitions_ensure(now=old, ahead=0)
    notification = _notification_made_at(build, old, status="dispatched")
    (delivery,) = _deliveries_made_at(build, notification, ["queued"], old)
    return delivery


def test_the_claim_naming_the_notification_finds_a_delivery_of_an_older_month(old_delivery):
    (claimed,) = deliveries_claim(delivery_ids=[old_delivery.pk], notification_ids=[old_delivery.notification_id])

    assert claimed.id == str(old_delivery.pk) and claimed.notification_id == str(old_delivery.notification_id)
    assert Delivery.objects.get(pk=old_delivery.pk).status == "sending"


def test_a_claim_naming_another_notification_takes_nothing(old_delivery):
    assert deliveries_claim(delivery_ids=[old_delivery.pk], notification_ids=[uuid.uuid4()]) == []
    assert Delivery.objects.get(pk=old_delivery.pk).status == "queued"


def test_a_message_from_before_with_delivery_ids_only_still_claims(old_delivery):
    (claimed,) = deliveries_claim(delivery_ids=[str(old_delivery.pk)])

    assert claimed.id == str(old_delivery.pk)


def test_lease_renewal_and_the_outcome_update_prune_and_still_write(old_delivery):
    token = uuid.uuid4()
    deliveries_claim(delivery_ids=[old_delivery.pk], token=token, notification_ids=[old_delivery.notification_id])
    notification_ids = [str(old_delivery.notification_id)]

    kept = deliveries_keep_lease(
        token=token, delivery_ids=[old_delivery.pk], provider="sendgrid", notification_ids=notification_ids
    )
    with transaction.atomic():
        written = deliveries_record(
            [{"id": old_delivery.pk, "status": "sent", "provider": "sendgrid", "provider_message_id": "m-1"}],
            claim_token=token,
            notification_ids=notification_ids,
        )

    assert kept == {str(old_delivery.pk)} and written == [old_delivery.pk]
    row = Delivery.objects.get(pk=old_delivery.pk)
    assert (row.status, row.provider_message_id, row.claim_token) == ("sent", "m-1", None)


def test_the_claim_scans_one_partition_with_the_notification_named_and_every_one_without(old_delivery):
    claim = f"UPDATE {DELIVERIES} SET status = 'sending' WHERE id = ANY(%s::uuid[]) AND status = 'queued'"  # noqa: S608
    ids = uuid_array([old_delivery.pk])

    every = _partitions_scanned(claim, [ids])
    pruned = _partitions_scanned(
        claim + " AND notification_id = ANY(%s::uuid[])", [ids, uuid_array([old_delivery.notification_id])]
    )

    assert every == len(partitions(DELIVERIES)) >= 5
    assert pruned == 1
