"""The SQLite branches of the settings, the migrations and the small vendor switches (docs/operations.md,
"The embedded default under test")."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

from apps.core.partitions import is_partitioned, partitions_ensure
from apps.events.models import Event, Rule, RuleExecution, WebhookAttempt, WebhookEndpoint, WebhookMessage
from apps.events.tasks import purge_events
from apps.tenancy.models import Tenant
from tests.embedded.conftest import notify


def _pragma(name: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def test_the_database_is_a_sqlite_file_in_wal_mode_with_a_busy_timeout(db: Any):
    """project/settings.py, the SQLite branch: WAL, synchronous=NORMAL, a 30 s busy timeout."""
    assert connection.vendor == "sqlite"
    assert str(connection.settings_dict["NAME"]).endswith("test.sqlite3")
    assert _pragma("journal_mode") == "wal"
    assert _pragma("busy_timeout") == 30000
    assert _pragma("synchronous") == 1  # NORMAL
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_concurrent_read_then_write_transactions_queue_instead_of_failing(transactional_db: Any):
    """IMMEDIATE transactions: writers that read first wait for the lock; none fails with
    "database is locked" on the read-to-write upgrade (what DEFERRED does under WAL)."""
    Tenant.objects.create(slug="seed", name="Seed")
    threads, errors, barrier = 6, [], threading.Barrier(6)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                seen = Tenant.objects.count()  # a read, then a write in the same transaction
                time.sleep(0.2)  # the others read meanwhile: under DEFERRED their upgrades would fail
                Tenant.objects.create(slug=f"w{n}", name=f"saw {seen}")
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors == []
    assert Tenant.objects.count() == threads + 1
    # Serialized: each writer saw every earlier commit, so the counts they saw are all different.
    assert len(set(Tenant.objects.exclude(slug="seed").values_list("name", flat=True))) == threads


def test_the_unsupported_nulls_not_distinct_constraint_is_silenced_and_the_service_keeps_one_default(
    tenant: Any,
):
    """SILENCED_SYSTEM_CHECKS = ["models.W047"] (SQLite only), and preferences_replace's
    delete-then-insert keeps one tenant default per category without the constraint."""
    from apps.notifications.models import Preference
    from apps.notifications.services.preferences import preferences_replace

    with override_settings(DEBUG=True):  # as under `make run` (pytest-django turns DEBUG off)
        found = [m for m in checks.run_checks(databases=["default"]) if m.id == "models.W047"]
        assert found and all(m.is_silenced() for m in found)
        call_command("check", "--database", "default", fail_level="WARNING")  # and nothing else to say

    for email in (False, True):
        preferences_replace(tenant=tenant, recipient=None, layers=[{"category": None, "channels": {"email": email}}])
    rows = list(Preference.objects.filter(tenant=tenant, recipient=None, category=None))
    assert [r.channels for r in rows] == [{"email": True}]


def test_production_checks_refuse_sqlite_without_debug(db: Any):
    """apps/observability/checks.py: the embedded default is for `make run` only."""
    from apps.observability.checks import check_urls

    with override_settings(DEBUG=True):
        assert not [e for e in check_urls() if e.id == "signalbox.E002"]
    with override_settings(DEBUG=False):
        assert [e.id for e in check_urls() if e.id == "signalbox.E002"] == ["signalbox.E002"]


def test_concurrent_index_migrations_build_plain_indexes(db: Any):
    """AddIndexConcurrentlyWhereSupported (apps/core/migration_operations.py) on SQLite: a plain index."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'notif_delivery_inbox_seq'")
        (sql,) = cursor.fetchone()
    assert "CONCURRENTLY" not in sql.upper() and "change_seq" in sql


def test_the_change_seq_trigger_numbers_inserted_inbox_rows(tenant: Any, people: list[Any]):
    """Migration 0007's SQLite trigger (NextChangeSeq is NULL there): every inserted delivery gets the
    next cursor value, in insertion order."""
    from apps.notifications.models import Delivery, NextChangeSeq

    assert NextChangeSeq().as_sql(None, connection) == ("NULL", [])
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert ("notif_delivery_change_seq",) in cursor.fetchall()
    notification = notify(tenant, people, channels=["in_app"])
    made = [
        Delivery.objects.create(tenant=tenant, notification=notification, recipient=p, channel="in_app") for p in people
    ]
    seqs = [Delivery.objects.get(pk=d.pk).change_seq for d in made]
    numbered = [s for s in seqs if s is not None]
    assert len(numbered) == len(made) and numbered == sorted(set(numbered))


def test_migrate_and_schedule_migrates_without_the_advisory_lock(db: Any):
    """migrate_and_schedule on SQLite: no pg_advisory_lock, still migrates and registers the schedules."""
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.all().delete()
    call_command("migrate_and_schedule", verbosity=0)
    assert PeriodicTask.objects.filter(enabled=True).exists()


def test_diagnose_reports_no_backend_pid(db: Any):
    """apps/core/tasks.py: SQLite has no server session; the probe answers 0 instead of failing."""
    from apps.core.tasks import diagnose

    assert diagnose.run()["db_session"] == 0


@pytest.mark.parametrize("count", [0, 3, 5500])
def test_the_any_lookup_is_a_plain_in_list(tenant: Any, people: list[Any], count: int):
    """apps/notifications/lookups.py on SQLite: `IN (...)`, `1 = 0` for none, and a fan-out chunk's
    worth of ids (FANOUT_CHUNK_SIZE is 5,000) in one query."""
    from apps.notifications.models import Recipient

    ids = [p.pk for p in people][:count] + list(range(10**6, 10**6 + max(count - 3, 0)))
    query = Recipient.objects.filter(id__any=ids)
    sql = str(query.query)
    assert "ANY(" not in sql
    assert ("1 = 0" in sql) if count == 0 else (" IN (" in sql)
    assert set(query.values_list("pk", flat=True)) == {p.pk for p in people[: min(count, 3)]}


def test_tenant_origins_find_tenants_by_a_json_key(db: Any):
    """apps/tenancy/origins.py filters tenants by `settings__has_key` (SQLite's JSON1)."""
    from django.core.cache import cache

    from apps.tenancy.origins import CACHE_KEY, tenant_origins

    cache.delete(CACHE_KEY)
    Tenant.objects.create(slug="with", name="With", settings={"inbox": {"allowed_origins": ["https://a.example"]}})
    Tenant.objects.create(
        slug="without", name="Without", settings={"other": {"allowed_origins": ["https://b.example"]}}
    )
    assert tenant_origins() == frozenset({"https://a.example"})


def test_sqlite_keeps_plain_tables_and_purges_events_by_delete(tenant: Any):
    """SQLite has no partitions (events 0005's RunPython does nothing there): `purge_events` drops
    none and deletes expired events with their rule executions, messages and attempts by batches."""
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/h", secret_encrypted="x")
    rule = Rule.objects.create(tenant=tenant, name="r", event_type="*", actions=[])
    for status in ("delivered", "failed"):
        event = Event.objects.create(tenant=tenant, type="order.paid", status="processed")
        RuleExecution.objects.create(tenant=tenant, rule=rule, event=event, outcome="succeeded")
        message = WebhookMessage.objects.create(
            tenant=tenant, endpoint=endpoint, event=event, event_type=event.type, body="{}", status=status
        )
        WebhookAttempt.objects.create(tenant=tenant, message=message, number=1, outcome="success")
    fresh = Event.objects.create(tenant=tenant, type="order.paid", status="processed")
    Event.objects.exclude(pk=fresh.pk).update(created_at=timezone.now() - timedelta(days=40))

    report = purge_events.run()

    assert not is_partitioned(Event._meta.db_table) and partitions_ensure() == []
    assert report["partitions"] == {"dropped": {}, "cascaded": {}, "kept": []}
    assert report["deleted"] == {"events": 2}
    assert report["cascaded"] == {"events.RuleExecution": 2, "events.WebhookMessage": 2, "events.WebhookAttempt": 2}
    assert list(Event.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert not (RuleExecution.objects.exists() or WebhookMessage.objects.exists() or WebhookAttempt.objects.exists())
