"""Poison events: processing that fails every time ends `dead` after a bounded number of attempts.

To make the processing itself fail (not one rule action, which is caught on its own) in a real
worker, the tests install a PostgreSQL trigger that refuses to mark `poison.pill` events processed:
the database refusing a write is the kind of failure that used to loop for ever.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.events.models import Event, RuleExecution
from apps.events.services.events import events_purge, events_sweep
from apps.events.services.processing import event_process
from apps.events.services.rules import rule_create
from apps.observability.models import AuditEntry
from tests.conftest import wait_for
from tests.observability.conftest import consumers_paused

POISON = "poison.pill"
# The processing worker retries at once, then after 1 s: three attempts in all.
FAST_RETRIES = {"SIGNALBOX_EVENT_RETRY_SCHEDULE": "0,1"}


@pytest.fixture
def poison_trigger(transactional_db: Any) -> Iterator[None]:
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION test_poison_pill() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'poison pill: event % may not be marked processed', NEW.id; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            f"CREATE TRIGGER test_poison_pill BEFORE UPDATE ON {table} FOR EACH ROW "
            f"WHEN (NEW.status = 'processed' AND NEW.type = '{POISON}') EXECUTE FUNCTION test_poison_pill()"
        )
    yield
    cure()


def cure() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS test_poison_pill ON {Event._meta.db_table}")
        cursor.execute("DROP FUNCTION IF EXISTS test_poison_pill()")


@pytest.fixture
def events_worker(worker: Any, start_worker: Any) -> Iterator[Any]:
    """The only consumer of the `events` queue, with fast retries (the session worker keeps the others)."""
    with consumers_paused("events"):
        yield start_worker(queues="events", concurrency=1, **FAST_RETRIES)


def record(api: Any, event_type: str = POISON) -> str:
    response = api.post("/api/v1/events/", {"type": event_type, "subject": {"type": "pill", "id": "1"}}, format="json")
    assert response.status_code == 202, response.json()
    return str(response.json()["id"])


def test_an_event_whose_processing_always_fails_ends_dead_then_is_replayed(events_worker, poison_trigger, api, tenant):
    rule = rule_create(
        tenant=tenant,
        name="watch pills",
        event_type=POISON,
        actions=[{"type": "notification", "template": "any", "watchers": True}],
    )
    event_id = record(api)

    event = wait_for(lambda: Event.objects.filter(pk=event_id, status="dead").first(), timeout=30, message="dead")

    assert event.attempts == 3
    assert event.last_error.startswith("ProgrammingError: poison pill: event")
    assert (event.next_attempt_at, event.dead_at is not None) == (None, True)
    assert not RuleExecution.objects.filter(event_id=event_id).exists()  # each attempt rolled back whole
    listed = api.get("/api/v1/events/?status=dead").json()["results"]
    assert [(e["id"], e["attempts"], e["last_error"]) for e in listed] == [(event_id, 3, event.last_error)]
    Event.objects.filter(pk=event_id).update(created_at=timezone.now() - timedelta(hours=1))
    assert events_sweep(older_than_seconds=0) == 0  # the sweeper leaves the dead alone

    cure()
    replayed = api.post(f"/api/v1/events/{event_id}/replay/")

    assert replayed.status_code == 202, replayed.json()
    assert (replayed.json()["status"], replayed.json()["attempts"]) == ("pending", 0)
    done = wait_for(lambda: Event.objects.filter(pk=event_id, status="processed").first(), message="processed")
    assert (done.attempts, done.last_error, done.dead_at) == (1, "", None)
    assert rule.executions.get(event_id=event_id).outcome == "succeeded"
    audit = AuditEntry.objects.get(action="event.replayed", target_id=event_id)
    assert audit.data["attempts"] == 3 and "poison pill" in audit.data["last_error"]
    again = api.post(f"/api/v1/events/{event_id}/replay/")
    assert (again.status_code, again.json()["code"]) == (409, "not_replayable")


def test_a_rule_whose_action_always_fails_leaves_the_event_processed_once(worker, api, tenant):
    rule = rule_create(
        tenant=tenant,
        name="start a task that does not exist",
        event_type="pill.taken",
        actions=[{"type": "task", "task": "no.such.task", "params": {}}],
    )
    event_id = record(api, "pill.taken")

    event = wait_for(lambda: Event.objects.filter(pk=event_id, status="processed").first(), message="processed")

    assert (event.attempts, event.last_error) == (1, "")
    execution = rule.executions.get(event_id=event_id)
    assert execution.outcome == "failed"
    assert [(a["status"], bool(a["error"])) for a in execution.actions] == [("failed", True)]
    Event.objects.filter(pk=event_id).update(created_at=timezone.now() - timedelta(hours=1))
    assert events_sweep(older_than_seconds=0) == 0


def ids_of(**filters: Any) -> set[str]:
    return {str(pk) for pk in Event.objects.filter(**filters).values_list("pk", flat=True)}


@pytest.mark.django_db
def test_dead_events_are_replayed_in_bulk_by_type_and_audited_once(api, other_api, tenant, other_tenant):
    mine = [record(api), record(api), record(api, "pill.taken")]
    theirs = record(other_api)
    Event.objects.update(status="dead", attempts=5, last_error="boom", dead_at=timezone.now())

    response = api.post("/api/v1/events/replay/", {"type": "poison.*", "ids": [*mine, theirs]}, format="json")

    assert response.status_code == 202, response.json()
    assert (response.json()["replayed"], sorted(response.json()["ids"])) == (2, sorted(mine[:2]))
    assert ids_of(status="pending") == set(mine[:2])
    assert Event.objects.get(pk=theirs).status == "dead"
    (audit,) = AuditEntry.objects.filter(action="event.bulk_replayed")
    assert (audit.data["count"], audit.data["type"]) == (2, "poison.*")


@pytest.mark.django_db
def test_an_attempt_lost_with_its_worker_counts_and_the_last_one_ends_dead(api, settings):
    settings.SIGNALBOX_EVENT_RETRY_SCHEDULE = [0]
    event_id = record(api, "pill.taken")
    # As a worker killed mid-attempt leaves it: both attempts counted, the last one's lease run out.
    Event.objects.filter(pk=event_id).update(attempts=2, next_attempt_at=timezone.now() - timedelta(seconds=1))

    assert event_process(event_id=event_id) is False

    event = Event.objects.get(pk=event_id)
    assert (event.status, event.attempts) == ("dead", 2)
    assert event.last_error == "Attempt 2 was lost: its worker stopped before it finished."


@pytest.mark.django_db
def test_retention_purges_dead_and_stale_pending_events_but_not_one_with_an_attempt_ahead(api):
    old = timezone.now() - timedelta(days=31)
    dead, stale, retrying, young = (record(api, "pill.taken") for _ in range(4))
    Event.objects.filter(pk=dead).update(status="dead", dead_at=old, created_at=old)
    Event.objects.filter(pk=stale).update(created_at=old)
    Event.objects.filter(pk=retrying).update(created_at=old, next_attempt_at=timezone.now() + timedelta(minutes=5))

    assert events_purge() == 2

    assert ids_of() == {retrying, young}
