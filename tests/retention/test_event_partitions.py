"""Events and webhooks across partitions (PostgreSQL): events by their UUIDv7 id, rule executions and
webhook messages by their event's id, attempts by their message's id (events 0005, docs/partitions.md).
Rows land in their month's partition, `purge_events` drops an expired month of events with its rule
executions, messages and attempts and leaves no orphan, a month still holding an event that must
stay is kept and purged row by row, the hourly purge drops expired messages' months, the unique
(endpoint, event) still refuses a duplicate, and deleting an endpoint or a rule cascades as before."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.core.partitions import (
    default_partition_name,
    month_start,
    partition_name,
    partitions,
    partitions_ensure,
    rebuild_table,
)
from apps.core.retention_tasks import purge_expired_rows
from apps.events.models import Event, Rule, RuleExecution, WebhookAttempt, WebhookEndpoint, WebhookMessage
from apps.events.services.rules import rule_delete
from apps.events.services.webhooks import endpoint_delete
from apps.events.tasks import purge_events
from tests.retention.test_partitions import uuid7_at

pytestmark = pytest.mark.django_db

EVENTS = Event._meta.db_table
EXECUTIONS = RuleExecution._meta.db_table
MESSAGES = WebhookMessage._meta.db_table
ATTEMPTS = WebhookAttempt._meta.db_table


def _names(table: str) -> set[str]:
    return {p.name for p in partitions(table)}


def _partition_of(model: Any, pk: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {model._meta.db_table} WHERE id = %s", [pk])  # noqa: S608
        return str(cursor.fetchone()[0])


class History:
    """Events made at a given time (their ids say so), with a rule execution and a message with one attempt."""

    def __init__(self, tenant: Any) -> None:
        self.tenant = tenant
        self.endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/h", secret_encrypted="x")
        self.rule = Rule.objects.create(tenant=tenant, name="r", event_type="order.*", actions=[])

    def event(
        self, at: datetime, *, status: str = "processed", message: str | None = "delivered", message_at: Any = None
    ) -> tuple[Event, RuleExecution, WebhookMessage | None, WebhookAttempt | None]:
        event = Event.objects.create(id=uuid7_at(at), tenant=self.tenant, type="order.paid", status=status)
        Event.objects.filter(pk=event.pk).update(created_at=at)
        execution = RuleExecution.objects.create(tenant=self.tenant, rule=self.rule, event=event, outcome="succeeded")
        RuleExecution.objects.filter(pk=execution.pk).update(created_at=at)
        if message is None:
            return event, execution, None, None
        made = message_at or at
        sent = WebhookMessage.objects.create(
            id=uuid7_at(made), tenant=self.tenant, endpoint=self.endpoint, event=event,
            event_type=event.type, body="{}", status=message,
        )  # fmt: skip
        WebhookMessage.objects.filter(pk=sent.pk).update(created_at=made)
        attempt = WebhookAttempt.objects.create(tenant=self.tenant, message=sent, number=1, outcome="success")
        return event, execution, sent, attempt


@pytest.fixture
def history(tenant: Any) -> History:
    return History(tenant)


def _orphans() -> dict[str, int]:
    """Rows whose parent is gone (the references have no database constraint any more)."""
    return {
        "executions": RuleExecution.objects.exclude(event_id__in=Event.objects.values("pk")).count(),
        "messages": WebhookMessage.objects.exclude(event_id__in=Event.objects.values("pk")).count(),
        "attempts": WebhookAttempt.objects.exclude(message_id__in=WebhookMessage.objects.values("pk")).count(),
    }


NO_ORPHANS = {"executions": 0, "messages": 0, "attempts": 0}


def test_new_events_and_messages_take_uuidv7_ids_and_land_in_this_months_partitions(history):
    event = Event.objects.create(tenant=history.tenant, type="order.paid")
    message = WebhookMessage.objects.create(
        tenant=history.tenant, endpoint=history.endpoint, event=event, event_type=event.type, body="{}"
    )

    assert event.pk.version == 7 and message.pk.version == 7
    this_month = month_start(timezone.now())
    assert _partition_of(Event, event.pk) == partition_name(EVENTS, this_month)
    assert _partition_of(WebhookMessage, message.pk) == partition_name(MESSAGES, this_month)


def test_each_row_lands_in_its_events_month_and_attempts_in_their_messages_month(history):
    month = month_start(timezone.now(), add=-2)
    later = month_start(timezone.now(), add=-1)
    partitions_ensure(now=month, ahead=1)
    at = month + timedelta(days=27, hours=23)
    event, execution, message, attempt = history.event(at, message_at=later + timedelta(hours=1))
    assert message is not None and attempt is not None

    assert _partition_of(Event, event.pk) == partition_name(EVENTS, month)
    assert _partition_of(RuleExecution, execution.pk) == partition_name(EXECUTIONS, month)
    # Keyed by its event: the same month as the event, though it was made the next month.
    assert _partition_of(WebhookMessage, message.pk) == partition_name(MESSAGES, month)
    assert _partition_of(WebhookAttempt, attempt.pk) == partition_name(ATTEMPTS, later)
    # An event whose UUIDv4 id came before the switch (or falls outside every month) is in DEFAULT.
    legacy = Event.objects.create(id=uuid.UUID("00000000-0000-4000-8000-000000000001"), tenant=history.tenant, type="x")
    assert _partition_of(Event, legacy.pk) == default_partition_name(EVENTS)


def test_a_duplicate_message_for_an_endpoint_and_event_is_refused_in_any_partition(history):
    old = month_start(timezone.now(), add=-2) + timedelta(days=3)
    partitions_ensure(now=old, ahead=0)
    for at in (old, timezone.now()):
        event, *_ = history.event(at, message="pending")
        again = WebhookMessage(
            tenant=history.tenant, endpoint=history.endpoint, event=event, event_type=event.type, body="{}"
        )

        # The fan-out's insert (ON CONFLICT DO NOTHING) skips it; a plain insert is refused.
        WebhookMessage.objects.bulk_create([again], ignore_conflicts=True)
        with pytest.raises(IntegrityError), transaction.atomic():
            WebhookMessage.objects.create(
                tenant=history.tenant, endpoint=history.endpoint, event=event, event_type=event.type, body="{}"
            )
        assert WebhookMessage.objects.filter(event=event, endpoint=history.endpoint).count() == 1
        with pytest.raises(IntegrityError), transaction.atomic():
            RuleExecution.objects.create(tenant=history.tenant, rule=history.rule, event=event, outcome="failed")


def test_purge_events_drops_an_expired_month_with_what_its_events_caused_and_keeps_the_rest(history):
    expired = month_start(timezone.now(), add=-4)  # past the 30 days of `events` and `webhook_messages`
    kept = month_start(timezone.now(), add=-3)
    partitions_ensure(now=expired, ahead=1)
    at = expired + timedelta(days=2)
    gone = [history.event(at), history.event(at, message="failed"), history.event(at, message=None)]
    # Processed after its month ended: its message's attempts are in the next month's partition.
    gone.append(history.event(expired + timedelta(days=27), message_at=kept + timedelta(hours=2)))
    at = kept + timedelta(days=2)
    finished = history.event(at)
    delivering = history.event(at, message="pending")  # a message still in flight keeps its event
    young = history.event(timezone.now() - timedelta(days=1))

    report = purge_events.run()

    assert report["partitions"]["dropped"] == {partition_name(EVENTS, expired): 4}
    assert report["partitions"]["cascaded"] == {
        "events.RuleExecution": 4,
        "events.WebhookMessage": 3,
        "events.WebhookAttempt": 3,
    }
    assert partition_name(EVENTS, kept) in report["partitions"]["kept"]
    for table in (EVENTS, EXECUTIONS, MESSAGES):
        assert partition_name(table, expired) not in _names(table)
        assert partition_name(table, kept) in _names(table)
    assert partition_name(ATTEMPTS, expired) not in _names(ATTEMPTS)
    assert not Event.objects.filter(pk__in=[e.pk for e, *_ in gone]).exists()
    # The month still holding an event that must stay: the finished one went by the batched DELETE.
    assert report["deleted"] == {"events": 1}
    assert not Event.objects.filter(pk=finished[0].pk).exists()
    assert Event.objects.filter(pk__in=[delivering[0].pk, young[0].pk]).count() == 2
    assert WebhookAttempt.objects.filter(message=delivering[2]).count() == 1
    assert RuleExecution.objects.filter(event=young[0]).count() == 1
    assert _orphans() == NO_ORPHANS


def test_the_hourly_purge_drops_expired_messages_months_and_leaves_events_to_their_own_purge(history, tenant):
    tenant.settings = {"retention_days": {"events": 365}}
    tenant.save(update_fields=["settings"])
    expired = month_start(timezone.now(), add=-4)
    partitions_ensure(now=expired, ahead=0)
    event, execution, message, _attempt = history.event(expired + timedelta(days=2))
    assert message is not None

    report = purge_expired_rows()
    by_events = purge_events.run()

    assert report["partitions"]["dropped"][partition_name(MESSAGES, expired)] == 1
    assert report["partitions"]["cascaded"]["events.WebhookAttempt"] == 1
    assert partition_name(MESSAGES, expired) not in _names(MESSAGES)
    assert by_events["partitions"]["dropped"] == {}  # events kept 365 days by this tenant
    assert Event.objects.filter(pk=event.pk).exists()
    assert RuleExecution.objects.filter(pk=execution.pk).exists()
    assert not WebhookMessage.objects.filter(pk=message.pk).exists()
    assert _orphans() == NO_ORPHANS


def test_a_tenant_with_a_shorter_retention_is_purged_by_delete_inside_a_live_partition(history, tenant):
    tenant.settings = {"retention_days": {"events": 3}}
    tenant.save(update_fields=["settings"])
    event, *_ = history.event(timezone.now() - timedelta(days=5))
    assert _partition_of(Event, event.pk) == partition_name(EVENTS, month_start(timezone.now()))

    report = purge_events.run()

    assert report["partitions"]["dropped"] == {}
    assert report["deleted"] == {"events": 1}
    assert report["cascaded"] == {"events.RuleExecution": 1, "events.WebhookMessage": 1, "events.WebhookAttempt": 1}
    assert _orphans() == NO_ORPHANS and not Event.objects.exists()


def test_an_event_still_pending_keeps_its_month(history):
    month = month_start(timezone.now(), add=-4)
    partitions_ensure(now=month, ahead=0)
    event, *_ = history.event(month + timedelta(days=2), status="pending")
    Event.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))  # a retry ahead

    report = purge_events.run()

    assert partition_name(EVENTS, month) in report["partitions"]["kept"]
    assert partition_name(EVENTS, month) in _names(EVENTS)
    assert Event.objects.filter(pk=event.pk).exists()  # and the batched DELETE keeps it too
    assert RuleExecution.objects.filter(event=event).count() == 1


def test_deleting_an_endpoint_or_a_rule_still_deletes_what_hangs_from_it(history):
    old = month_start(timezone.now(), add=-2) + timedelta(days=3)
    partitions_ensure(now=old, ahead=0)
    rows = [history.event(old), history.event(timezone.now())]

    endpoint_delete(endpoint=history.endpoint)
    rule_delete(rule=history.rule)

    assert not WebhookMessage.objects.exists()
    assert not WebhookAttempt.objects.exists()
    assert not RuleExecution.objects.exists()
    assert Event.objects.filter(pk__in=[e.pk for e, *_ in rows]).count() == 2


def test_a_writer_holding_the_table_makes_the_drop_give_up_not_the_writer(transactional_db, history):
    """A writer that touches every partition (an update of a message by id alone) holds the parent:
    the drop waits under its lock timeout (below deadlock_timeout), gives up, and the writer goes
    on; the next run drops the month."""
    month = month_start(timezone.now(), add=-4)
    partitions_ensure(now=month, ahead=0)
    history.event(month + timedelta(days=2))
    _event, _execution, current, _attempt = history.event(timezone.now())
    assert current is not None
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"], dbname=settings["NAME"]
    ) as writer:
        writer.execute(f"UPDATE {MESSAGES} SET last_error = 'claimed' WHERE id = %s", [current.pk])  # noqa: S608

        busy = purge_events.run()

        writer.execute(f"UPDATE {MESSAGES} SET last_error = 'sent' WHERE id = %s", [current.pk])  # noqa: S608
        writer.commit()
    assert partition_name(EVENTS, month) in busy["partitions"]["kept"]
    assert busy["deleted"] == {"events": 1}  # the batched DELETE took its rows meanwhile (row locks only)
    assert WebhookMessage.objects.get(pk=current.pk).last_error == "sent"

    again = purge_events.run()

    assert again["partitions"]["dropped"] == {partition_name(EVENTS, month): 0}
    for table in (EVENTS, EXECUTIONS, MESSAGES, ATTEMPTS):
        assert partition_name(table, month) not in _names(table)
    assert _orphans() == NO_ORPHANS


def test_the_migration_rebuilds_the_events_tables_both_ways(history):
    old = month_start(timezone.now(), add=-2) + timedelta(days=3)
    partitions_ensure(now=old, ahead=0)
    rows = [history.event(old), history.event(timezone.now())]
    tables = ((EVENTS, "id"), (EXECUTIONS, "event_id"), (MESSAGES, "event_id"), (ATTEMPTS, "message_id"))
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # a table with pending checks cannot be dropped
        for table, _key in reversed(tables):
            rebuild_table(cursor, table=table, pk="id", key=None, now=timezone.now())
        assert not partitions(EVENTS) and Event.objects.count() == 2
        for table, key in tables:
            rebuild_table(cursor, table=table, pk="id", key=key, now=timezone.now())

    (event, execution, message, _attempt), _recent = rows
    assert message is not None
    assert _partition_of(Event, event.pk) == partition_name(EVENTS, month_start(old))
    assert _partition_of(RuleExecution, execution.pk) == partition_name(EXECUTIONS, month_start(old))
    assert _partition_of(WebhookMessage, message.pk) == partition_name(MESSAGES, month_start(old))
    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookMessage.objects.create(
            tenant=history.tenant, endpoint=history.endpoint, event=event, event_type=event.type, body="{}"
        )
    other_rule = Rule.objects.create(tenant=history.tenant, name="other", event_type="*", actions=[])
    again = RuleExecution.objects.create(tenant=history.tenant, rule=other_rule, event=_recent[0], outcome="failed")
    assert again.pk > execution.pk  # the identity sequence carried on
    assert _partition_of(RuleExecution, again.pk) == partition_name(EXECUTIONS, month_start(timezone.now()))
