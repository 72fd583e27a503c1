"""Retention purges on PostgreSQL: what goes (past the tenant's retention, finished), what never goes
(in flight, scheduled, waiting for a digest, inside a dedup or idempotency window), in bounded
batches that skip locked rows, can run dry, export first, and resume after an interruption."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from apps.core.models import IdempotencyRecord
from apps.core.retention import purge, retention_policy_names, shared_purge_policies
from apps.events.models import Event, WebhookAttempt, WebhookEndpoint, WebhookMessage
from apps.notifications.models import Delivery, DeliveryAttempt, DigestWindow, Notification
from apps.observability import metrics

pytestmark = pytest.mark.django_db

FINISHED = ["sent", "delivered", "failed", "dead", "suppressed", "cancelled"]
STILL_NEEDED = ["pending", "queued", "sending", "deferred", "digest"]


def _policies(*names: str):
    return [p for p in shared_purge_policies() if p.name in names]


def test_the_hourly_purge_runs_the_policies_the_apps_registered_children_before_parents():
    shared = [p.name for p in shared_purge_policies()]

    assert shared == [
        "deliveries",
        "inbox_read",
        "inbox_unread",
        "digest_windows",
        "notifications",
        "webhook_messages",
        "idempotency_keys",
    ]
    # Purged by their own apps' jobs, listed for dry runs and operator runs.
    assert set(retention_policy_names()) == {*shared, "events", "transition_intents", "audit"}


def _purged(metric_table: str) -> float:
    return metrics.ROWS_PURGED.labels(table=metric_table)._value.get()


def test_finished_deliveries_past_retention_go_with_their_attempts_and_in_flight_ones_stay(build):
    old = build.notification()
    gone = build.deliveries(old, FINISHED, attempts=2)
    kept = build.deliveries(old, STILL_NEEDED, attempts=1)
    young = build.deliveries(build.notification(days_old=1), ["sent"], days_old=1)
    before = _purged("deliveries")

    report = purge(_policies("deliveries"))

    assert report.deleted == {"deliveries": len(FINISHED)}
    assert report.cascaded == {"notifications.DeliveryAttempt": 2 * len(FINISHED)}
    assert not Delivery.objects.filter(pk__in=[d.pk for d in gone]).exists()
    assert Delivery.objects.filter(pk__in=[d.pk for d in kept + young]).count() == len(STILL_NEEDED) + 1
    assert DeliveryAttempt.objects.count() == len(STILL_NEEDED)
    assert _purged("deliveries") - before == len(FINISHED)


def test_inbox_items_keep_their_own_retention_read_or_not(build):
    old = build.notification(days_old=400)
    read_100 = build.deliveries(old, ["read"], channel="in_app", days_old=100, read=True)
    unread_100 = build.deliveries(old, ["delivered"], channel="in_app", days_old=100)
    unread_200 = build.deliveries(old, ["delivered"], channel="in_app", days_old=200)
    email_100 = build.deliveries(old, ["sent"], days_old=100)

    report = purge(_policies("deliveries", "inbox_read", "inbox_unread"))

    # Defaults: read inbox items 90 days, unread 180, other deliveries 30.
    assert report.deleted == {"deliveries": 1, "inbox_read": 1, "inbox_unread": 1}
    left = set(Delivery.objects.values_list("pk", flat=True))
    assert unread_100[0].pk in left
    assert not left & {read_100[0].pk, unread_200[0].pk, email_100[0].pk}


def test_a_delivery_inside_its_notifications_dedup_window_stays(build):
    long_window = build.notification(dedup_key="weekly", dedup_window_seconds=60 * 86400)
    short_window = build.notification(dedup_key="hourly", dedup_window_seconds=3600)
    kept = build.deliveries(long_window, ["sent"], dedup_key="weekly")
    gone = build.deliveries(short_window, ["sent"], dedup_key="hourly")

    purge(_policies("deliveries"))

    assert Delivery.objects.filter(pk=kept[0].pk).exists()
    assert not Delivery.objects.filter(pk=gone[0].pk).exists()


def test_a_notification_goes_only_once_nothing_of_it_is_left(build):
    empty_done = build.notification(status="completed")
    scheduled = build.notification(status="scheduled")
    with_deliveries = build.notification(status="completed")
    build.deliveries(with_deliveries, ["queued"])
    young = build.notification(status="completed", days_old=2)

    report = purge(_policies("deliveries", "notifications"))

    assert report.deleted["notifications"] == 1
    assert set(Notification.objects.values_list("pk", flat=True)) >= {scheduled.pk, with_deliveries.pk, young.pk}
    assert not Notification.objects.filter(pk=empty_done.pk).exists()


def test_a_tenants_own_retention_applies_to_its_rows_only(build, tenant, other_tenant):
    tenant.settings = {**tenant.settings, "retention_days": {"deliveries": 7}}
    tenant.save(update_fields=["settings"])
    ours = build.deliveries(build.notification(days_old=10), ["sent"], days_old=10)
    theirs = build.deliveries(build.notification(days_old=10, for_tenant=other_tenant), ["sent"], days_old=10)

    purge(_policies("deliveries"))

    assert not Delivery.objects.filter(pk=ours[0].pk).exists()
    assert Delivery.objects.filter(pk=theirs[0].pk).exists()  # 10 days is inside the 30-day default


@pytest.mark.parametrize("bad", [-3, 0, "abc", 2.5, True, None])
def test_a_bad_retention_setting_falls_back_to_the_default_and_spares_the_other_tenants(
    build, tenant, other_tenant, bad
):
    tenant.settings = {**tenant.settings, "retention_days": {"deliveries": bad}}
    tenant.save(update_fields=["settings"])
    other_tenant.settings = {**other_tenant.settings, "retention_days": {"deliveries": "7"}}
    other_tenant.save(update_fields=["settings"])
    ours = build.deliveries(build.notification(days_old=10), ["sent"], days_old=10)
    theirs = build.deliveries(build.notification(days_old=10, for_tenant=other_tenant), ["sent"], days_old=10)

    purge(_policies("deliveries"))

    assert Delivery.objects.filter(pk=ours[0].pk).exists()  # the 30-day default, not "everything"
    assert not Delivery.objects.filter(pk=theirs[0].pk).exists()  # the other tenant's purge still ran


def test_a_dry_run_counts_and_deletes_nothing(build):
    build.deliveries(build.notification(), ["sent"] * 4 + ["queued"])

    report = purge(_policies("deliveries", "notifications"), dry_run=True)

    assert report.dry_run is True
    assert report.deleted == {"deliveries": 4, "notifications": 0}
    assert Delivery.objects.count() == 5


def test_export_writes_each_batch_as_json_lines_before_deleting_it(build, tenant):
    tenant.settings = {**tenant.settings, "retention_export": True}
    tenant.save(update_fields=["settings"])
    rows = build.deliveries(build.notification(), ["sent"] * 5)

    report = purge(_policies("deliveries"), batch_size=2)

    paths = report.exported["deliveries"]
    assert len(paths) == 3 and all(p.startswith(f"retention-exports/{tenant.slug}/deliveries/") for p in paths)
    exported = [json.loads(line) for p in paths for line in default_storage.open(p).read().decode().splitlines()]
    assert sorted(r["id"] for r in exported) == sorted(str(d.pk) for d in rows)
    assert not Delivery.objects.exists()


def test_batches_walk_past_rows_still_needed_and_a_stopped_run_resumes(build):
    old = build.notification()
    statuses = ["sent", "queued", "failed", "deferred"] * 5  # kept rows interleaved with expired ones
    build.deliveries(old, statuses)

    stopped = purge(_policies("deliveries"), batch_size=3, max_seconds=0)
    assert stopped.complete is False and Delivery.objects.count() == 20

    finished = purge(_policies("deliveries"), batch_size=3)
    assert finished.complete is True and finished.deleted["deliveries"] == 10
    assert sorted(Delivery.objects.values_list("status", flat=True)) == ["deferred"] * 5 + ["queued"] * 5


@pytest.mark.django_db(transaction=True)
def test_a_row_a_writer_holds_is_skipped_without_waiting_and_goes_next_time(build):
    rows = build.deliveries(build.notification(), ["sent"] * 3)
    db = connection.settings_dict
    writer = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres", dbname=db["NAME"]
    )
    try:
        writer.execute("SELECT 1 FROM notifications_delivery WHERE id = %s FOR UPDATE", [rows[0].pk])

        report = purge(_policies("deliveries"), batch_size=2)

        assert report.deleted["deliveries"] == 2
        assert list(Delivery.objects.values_list("pk", flat=True)) == [rows[0].pk]
    finally:
        writer.rollback()
        writer.close()
    assert purge(_policies("deliveries")).deleted["deliveries"] == 1


def test_closed_digest_windows_go_and_open_ones_stay(build, tenant):
    recipient = build.make_recipients(1, prefix="digest")[0]
    old = timezone.now() - timedelta(days=40)

    def window(status: str, key: str) -> DigestWindow:
        return DigestWindow.objects.create(
            tenant=tenant, recipient=recipient, channel="email", frequency="daily", group_key=key,
            window_key=f"{key}@x", starts_at=old, due_at=old, status=status, created_at=old,
        )  # fmt: skip

    open_window, sent, empty = window("open", "a"), window("sent", "b"), window("empty", "c")

    assert purge(_policies("digest_windows")).deleted == {"digest_windows": 2}
    assert list(DigestWindow.objects.values_list("pk", flat=True)) == [open_window.pk]
    del sent, empty


def test_webhook_messages_in_flight_stay_and_delivered_ones_go_with_their_attempts(tenant):
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/hook", secret_encrypted="x")
    event = Event.objects.create(tenant=tenant, type="order.shipped", status="processed")
    old = timezone.now() - timedelta(days=40)
    messages = {}
    for status in ("delivered", "failed", "pending", "sending"):
        other = Event.objects.create(tenant=tenant, type="order.shipped", status="processed")
        messages[status] = WebhookMessage.objects.create(
            tenant=tenant, endpoint=endpoint, event=other, event_type="order.shipped", body="{}", status=status
        )
        WebhookAttempt.objects.create(tenant=tenant, message=messages[status], number=1, outcome="success")
    WebhookMessage.objects.update(created_at=old)
    del event

    report = purge(_policies("webhook_messages"))

    assert report.deleted == {"webhook_messages": 2}
    assert report.cascaded == {"events.WebhookAttempt": 2}
    assert set(WebhookMessage.objects.values_list("status", flat=True)) == {"pending", "sending"}


def test_expired_idempotency_keys_go(tenant):
    def record(key: str, delete_at) -> IdempotencyRecord:
        return IdempotencyRecord.objects.create(
            tenant=tenant, scope="notifications.create", key=key, request_hash="h", response_status=202,
            response_body={}, delete_at=delete_at,
        )  # fmt: skip

    record("expired", timezone.now() - timedelta(minutes=1))
    record("live", timezone.now() + timedelta(hours=1))

    assert purge(_policies("idempotency_keys")).deleted == {"idempotency_keys": 1}
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["live"]


def test_the_batch_query_reads_the_tenant_time_index(build, tenant):
    notification = build.notification()
    build.deliveries(notification, ["sent"])
    # 30,000 recipients, each with one delivery of this notification: one in twenty past retention
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO notifications_recipient (tenant_id, external_id, name, email, phone, locale, timezone,
                chat_address, webhook_url, data, created_at, updated_at)
            SELECT %s, 'bulk-' || g, '', '', '', '', '', '', '', '{}', now(), now() FROM generate_series(1, 30000) g
            """,
            [tenant.pk],
        )
        cursor.execute(
            """
            INSERT INTO notifications_delivery (id, tenant_id, notification_id, recipient_id, channel, status,
                suppression_reason, attempts, provider, provider_message_id, error_code, last_error, created_at)
            SELECT gen_random_uuid(), r.tenant_id, %s, r.id, 'sms', 'sent', '', 0, '', '', '', '',
                   now() - (CASE WHEN g.n %% 20 = 0 THEN 40 ELSE 0 END + random() * 28) * interval '1 day'
            FROM notifications_recipient r, LATERAL (SELECT r.id AS n) g WHERE r.external_id LIKE 'bulk-%%'
            """,
            [notification.pk],
        )
        cursor.execute("ANALYZE notifications_delivery")
    from apps.core.retention import _expired

    (policy,) = _policies("deliveries")
    plan = _expired(policy, tenant, timezone.now()).order_by("created_at", "pk").values("pk")[:5000].explain()

    assert "notif_delivery_list" in plan, plan


def _table_of(path: str) -> str:
    """`<stamp>-<n>.jsonl` holds the policy's own rows, `<stamp>-<n>.<app>.<model>.jsonl` a cascaded table's."""
    return path.rsplit("/", 1)[1].split(".", 1)[1].removesuffix("jsonl").rstrip(".") or "own"


def _exported_rows(paths: list[str], table: str) -> list[dict]:
    return [
        json.loads(line)
        for p in paths
        if _table_of(p) == table
        for line in default_storage.open(p).read().decode().splitlines()
    ]


def test_export_writes_the_rows_deleted_with_the_batch_one_file_per_table(build, tenant):
    tenant.settings = {**tenant.settings, "retention_export": True}
    tenant.save(update_fields=["settings"])
    rows = build.deliveries(build.notification(), ["sent"] * 3, attempts=2)

    report = purge(_policies("deliveries"), batch_size=2)

    paths = report.exported["deliveries"]
    assert [_table_of(p) for p in paths] == ["notifications.deliveryattempt", "own"] * 2  # two batches
    attempts = _exported_rows(paths, "notifications.deliveryattempt")
    assert sorted((a["delivery_id"], a["number"]) for a in attempts) == sorted(
        (str(d.pk), n) for d in rows for n in (1, 2)
    )
    assert sorted(d["id"] for d in _exported_rows(paths, "own")) == sorted(str(d.pk) for d in rows)
    assert not DeliveryAttempt.objects.exists()


def test_export_of_events_holds_their_rule_executions_messages_and_attempts(tenant):
    from apps.events.models import Rule, RuleExecution
    from apps.events.services.events import events_retention_policy

    tenant.settings = {**tenant.settings, "retention_export": True}
    tenant.save(update_fields=["settings"])
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/hook", secret_encrypted="x")
    rule = Rule.objects.create(tenant=tenant, name="r", event_type="order.*", actions=[])
    event = Event.objects.create(tenant=tenant, type="order.shipped", status="processed")
    execution = RuleExecution.objects.create(tenant=tenant, rule=rule, event=event, outcome="succeeded")
    message = WebhookMessage.objects.create(
        tenant=tenant, endpoint=endpoint, event=event, event_type=event.type, body="{}", status="delivered"
    )
    attempt = WebhookAttempt.objects.create(tenant=tenant, message=message, number=1, outcome="success")
    Event.objects.update(created_at=timezone.now() - timedelta(days=40))

    report = purge([events_retention_policy()])

    paths = report.exported["events"]
    assert [r["id"] for r in _exported_rows(paths, "events.ruleexecution")] == [execution.pk]
    assert [r["id"] for r in _exported_rows(paths, "events.webhookmessage")] == [str(message.pk)]
    assert [r["id"] for r in _exported_rows(paths, "events.webhookattempt")] == [attempt.pk]
    assert [r["id"] for r in _exported_rows(paths, "own")] == [str(event.pk)]
    assert report.cascaded == {"events.RuleExecution": 1, "events.WebhookMessage": 1, "events.WebhookAttempt": 1}
