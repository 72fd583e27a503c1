"""The send pipeline's steps one by one (claim → load → render → settle → send → record → finish),
on real PostgreSQL rows made by fan-out; test_sending.py drives `deliveries_send` as a whole."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from apps.notifications.models import Delivery, DeliveryAttempt, Recipient, SinkRecord
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.sending import (
    RenderContext,
    SendItem,
    batch_admit,
    batch_claim,
    batch_finish,
    batch_load,
    batch_render,
    batch_send,
    batch_settle,
    delivery_message,
    delivery_provider,
    delivery_unsendable,
    request_begin,
    request_call,
    request_record,
    request_rows,
)
from apps.notifications.services.suppressions import suppressions_add
from apps.providers.base import SendResult

pytestmark = pytest.mark.django_db


def _queued(tenant: Any, make_template: Any, make_recipients: Any, *, n: int = 2, metadata: Any = None) -> list[str]:
    make_template(default_channels=["email"])
    make_recipients(n)
    notification = notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": "A-1"},
        recipients=[f"user-{i}" for i in range(n)],
        metadata=metadata or {},
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    return sorted(str(pk) for pk in Delivery.objects.filter(notification=notification).values_list("pk", flat=True))


def _loaded(ids: list[str]) -> Any:
    batch = batch_claim(ids)
    batch_load(batch)
    return batch


def test_claim_takes_queued_rows_under_one_token_and_a_second_claim_gets_none(
    recording_tenant, make_template, make_recipients
):
    ids = _queued(recording_tenant, make_template, make_recipients)
    batch = batch_claim(ids)
    assert sorted(str(d.id) for d in batch.claimed) == ids and batch.open_ids == set(ids)
    rows = Delivery.objects.filter(pk__in=ids)
    assert {(d.status, d.attempts, d.claim_token) for d in rows} == {("sending", 1, batch.token)}
    assert batch_claim(ids).claimed == []


def test_load_reads_recipients_notifications_and_addresses_listed_since_fan_out(
    recording_tenant, make_template, make_recipients
):
    ids = _queued(recording_tenant, make_template, make_recipients)
    listed = Delivery.objects.select_related("recipient").get(pk=ids[0])
    entry = {"tenant_id": recording_tenant.pk, "channel": "email", "reason": "hard_bounce"}
    suppressions_add([{**entry, "address": listed.recipient.email}])
    batch = _loaded(ids)
    assert set(batch.recipients) == set(Recipient.objects.filter(tenant=recording_tenant).values_list("pk", flat=True))
    assert list(batch.notifications) == [str(listed.notification_id)]
    assert batch.listed == {str(listed.pk)}


def test_a_delivery_without_an_address_or_listed_or_past_its_budget_is_settled_without_a_request(
    recording_tenant, make_template, make_recipients
):
    ids = _queued(recording_tenant, make_template, make_recipients, n=3)
    batch = _loaded(ids)
    context = RenderContext(batch)
    first, second, third = batch.claimed
    batch.listed = {second.id}
    third = third._replace(attempts=99)  # an `unknown` last attempt that came back past the budget

    no_address = delivery_unsendable(batch, context, first, to="")
    listed = delivery_unsendable(batch, context, second, to="someone@example.com")
    unconfirmed = delivery_unsendable(batch, context, third, to="someone@example.com")

    assert no_address == {"id": first.id, "status": "suppressed", "suppression_reason": "no_address"}
    assert listed == {"id": second.id, "status": "suppressed", "suppression_reason": "suppressed_address"}
    assert unconfirmed and (unconfirmed["status"], unconfirmed["error_code"]) == ("dead", "unconfirmed")
    assert batch.tally.suppressed == Counter({("email", "no_address"): 1, ("email", "suppressed_address"): 1})
    assert batch.tally.dead == Counter({"email": 1})
    assert delivery_unsendable(batch, context, first, to="someone@example.com") is None


def test_a_message_is_built_from_the_template_and_a_broken_one_fails_its_delivery_alone(
    recording_tenant, make_template, make_recipients
):
    ids = _queued(recording_tenant, make_template, make_recipients)
    batch = _loaded(ids)
    context = RenderContext(batch)
    good, broken = batch.claimed

    item = delivery_message(batch, context, good, to="user@example.com")
    assert isinstance(item, SendItem)
    assert item.message.to == "user@example.com" and item.rendered["content"]["subject"] == "Order A-1 shipped"

    class Exploding:
        def render(self, channel: str, recipient: Any) -> dict[str, Any]:
            raise MemoryError("runaway expression")

    context.renderers[broken.notification_id] = Exploding()  # type: ignore[assignment]
    failed = delivery_message(batch, context, broken, to="user@example.com")
    assert isinstance(failed, dict)
    assert (failed["status"], failed["error_code"]) == ("failed", "render_error")
    assert "MemoryError" in failed["last_error"]


def test_the_provider_is_the_chains_turn_for_the_attempt(recording_tenant, make_template, make_recipients):
    recording_tenant.settings = {
        **recording_tenant.settings,
        "channel_providers": {"email": ["sink", "recording_sink"]},
    }
    recording_tenant.save(update_fields=["settings"])
    ids = _queued(recording_tenant, make_template, make_recipients, n=1)
    batch = _loaded(ids)
    context = RenderContext(batch)
    (delivery,) = batch.claimed
    assert getattr(delivery_provider(batch, context, delivery), "name", None) == "sink"
    retry = delivery._replace(attempts=2)  # a retry fails over to the next provider of the chain
    assert getattr(delivery_provider(batch, context, retry), "name", None) == "recording_sink"


def test_render_plans_requests_per_adapter_and_settle_records_what_needs_none(
    recording_tenant, make_template, make_recipients
):
    ids = _queued(recording_tenant, make_template, make_recipients, n=3)
    Recipient.objects.filter(tenant=recording_tenant, external_id="user-0").update(email="")
    batch = _loaded(ids)
    plan = batch_render(batch)
    (adapter, items) = next(iter(plan.work.values()))
    assert adapter.name == "recording_sink" and len(items) == 2
    assert [row["suppression_reason"] for row in plan.settled] == ["no_address"]

    batch_settle(batch, plan)
    no_address = plan.settled[0]["id"]
    assert Delivery.objects.get(pk=no_address).status == "suppressed"
    assert batch.summary.statuses == Counter({"suppressed": 1})
    assert str(no_address) not in batch.open_ids  # the claim ended on it


def test_admit_lets_everything_through_without_limits(recording_tenant, make_template, make_recipients):
    ids = _queued(recording_tenant, make_template, make_recipients)
    batch = _loaded(ids)
    (adapter, items) = next(iter(batch_render(batch).work.values()))
    assert batch_admit(batch, adapter, items) == items


def test_a_request_begins_only_for_rows_the_claim_still_holds(recording_tenant, make_template, make_recipients):
    ids = _queued(recording_tenant, make_template, make_recipients)
    batch = _loaded(ids)
    (adapter, items) = next(iter(batch_render(batch).work.values()))
    taken_back = items[1].delivery.id
    Delivery.objects.filter(pk=taken_back).update(status="pending", claim_token=None)  # the sweeper's doing
    batch.open_ids.discard(str(taken_back))
    assert request_begin(batch, adapter, items) == [items[0]]


def test_a_request_call_returns_one_result_per_message(recording_tenant, make_template, make_recipients):
    ids = _queued(recording_tenant, make_template, make_recipients)
    batch = _loaded(ids)
    (adapter, items) = next(iter(batch_render(batch).work.values()))
    results, latency_ms = request_call(adapter, [item.message for item in items])
    assert [r.accepted for r in results] == [True, True] and latency_ms >= 0
    assert SinkRecord.objects.filter(delivery_id__in=ids).count() == 2


def test_a_requests_outcomes_become_rows_and_are_recorded_once(recording_tenant, make_template, make_recipients):
    ids = _queued(recording_tenant, make_template, make_recipients)
    batch = _loaded(ids)
    (adapter, items) = next(iter(batch_render(batch).work.values()))
    results = [
        SendResult.ok(adapter.name, message_id="m-1"),
        SendResult.transient(adapter.name, "busy", code="busy", retry_after=60),
    ]
    rows = request_rows(
        batch, adapter, items, results, 12.0, batch.notifications[items[0].delivery.notification_id].created_at
    )
    assert [row["status"] for row in rows.deliveries] == ["sent", "pending"]
    assert [a["outcome"] for a in rows.attempts] == ["accepted", "transient"]

    health: Counter[tuple[Any, str]] = Counter()
    request_record(batch, adapter, items, results, 12.0, health)
    sent, retried = (Delivery.objects.get(pk=item.delivery.id) for item in items)
    assert (sent.status, sent.provider_message_id, sent.claim_token) == ("sent", "m-1", None)
    assert retried.status == "pending" and retried.next_attempt_at is not None
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids).count() == 2
    assert batch.summary.statuses == Counter({"sent": 1, "pending": 1})
    assert health == Counter({(recording_tenant.pk, "ok"): 1, (recording_tenant.pk, "failed"): 1})


def test_send_out_of_time_releases_the_share_and_finish_requeues_and_republishes_it(
    recording_tenant, make_template, make_recipients, monkeypatch, django_capture_on_commit_callbacks
):
    from apps.notifications import tasks

    published: list[Any] = []
    carried: list[Any] = []

    def apply_async(args: Any = (), **kw: Any) -> None:
        published.append((list(args[0]), kw))
        carried.append(args[1:])

    monkeypatch.setattr(tasks.send_batch, "apply_async", apply_async)
    ids = _queued(recording_tenant, make_template, make_recipients)
    batch = _loaded(ids)
    (adapter, items) = next(iter(batch_render(batch).work.values()))
    batch.budget = -1.0  # the time budget is used up

    batch_send(batch, adapter, items)
    assert sorted(batch.summary.released) == ids and not SinkRecord.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        batch_finish(batch, "notifications.bulk")
    assert {d.status for d in Delivery.objects.filter(pk__in=ids)} == {"queued"}
    assert {d.attempts for d in Delivery.objects.filter(pk__in=ids)} == {0}
    assert [(sorted(args), kw["queue"]) for args, kw in published] == [(ids, "notifications.bulk")]
    # The republished message names the deliveries' notification, so the next claim prunes partitions.
    notification_ids = {str(n) for n in Delivery.objects.filter(pk__in=ids).values_list("notification_id", flat=True)}
    assert carried == [([*notification_ids],)]


@pytest.mark.parametrize("carries_notifications", [True, False], ids=["new message", "message from before"])
def test_a_send_message_with_or_without_its_notification_ids_sends_each_delivery_once(
    recording_tenant, make_template, make_recipients, carries_notifications
):
    from apps.notifications import tasks

    ids = _queued(recording_tenant, make_template, make_recipients)
    notification_ids = sorted(
        {str(n) for n in Delivery.objects.filter(pk__in=ids).values_list("notification_id", flat=True)}
    )
    args = (ids, notification_ids) if carries_notifications else (ids,)  # a rolling deploy has both in flight

    tasks.send_batch(*args)
    tasks.send_batch(*args)  # delivered twice by the broker: claimed once

    assert {d.status for d in Delivery.objects.filter(pk__in=ids)} == {"sent"}
    assert SinkRecord.objects.filter(delivery_id__in=ids).count() == len(ids)
