"""Expanding a chunk step by step (context → decide → write → count), on real PostgreSQL rows;
test_fanout.py drives whole chunks through `fanout_chunk_run`."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest

from apps.notifications.models import Delivery, Notification, Preference, Recipient, uuid7, uuid7_many
from apps.notifications.rendering import recipient_attributes_read
from apps.notifications.services.announce import Audience
from apps.notifications.services.fanout import (
    RECIPIENT_FIELDS,
    ChunkResult,
    chunk_context,
    chunk_count,
    chunk_decide,
    chunk_write,
    delivery_decide,
    recipient_columns,
    suppression_reason,
)
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.preferences import EffectivePreference
from apps.notifications.services.recipients import device_register
from apps.notifications.services.suppressions import suppressions_add

pytestmark = pytest.mark.django_db

NOW = datetime(2030, 1, 15, 22, 30, tzinfo=UTC)  # 23:30 in Paris


def _notification(tenant: Any, external_ids: list[str], **extra: Any) -> Notification:
    created = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "7"}, recipients=external_ids, **extra
    )
    return Notification.objects.select_related("tenant", "category", "template", "template_version").get(pk=created.pk)


def _recipients(tenant: Any, external_ids: list[str]) -> list[Any]:
    rows = Recipient.objects.filter(tenant=tenant, external_id__in=external_ids).order_by("pk")
    return list(rows.values_list(*RECIPIENT_FIELDS, named=True))


def _never() -> datetime | None:
    raise AssertionError("quiet hours were asked for a row they cannot defer")


def test_the_context_loads_devices_listed_addresses_and_the_inline_inbox(tenant, make_template, make_recipients):
    make_template(default_channels=["email", "push", "in_app"])
    with_device, listed = make_recipients(2)
    device_register(recipient=with_device, platform="ios", token="tok-1")
    suppressions_add([{"tenant_id": tenant.pk, "channel": "email", "address": listed.email, "reason": "hard_bounce"}])
    notification = _notification(tenant, ["user-0", "user-1"])

    context = chunk_context(notification, _recipients(tenant, ["user-0", "user-1"]), NOW)

    assert context.with_devices == {with_device.pk}
    assert context.listed == {(listed.pk, "email")}
    assert context.duplicates == set()  # no dedup key: nothing asked
    assert list(context.inline) == ["in_app"]


def test_suppression_reasons_come_in_order_and_critical_ones_skip_the_opt_outs(tenant, make_template, make_recipients):
    make_template(default_channels=["email", "sms"])
    make_recipients(1, unsubscribed=True)
    notification = _notification(tenant, ["user-0"])
    context = chunk_context(notification, _recipients(tenant, ["user-0"]), NOW)
    (recipient,) = context.recipients
    opted_out = EffectivePreference(channels={"email": False})

    assert suppression_reason(context, recipient, EffectivePreference(), "email") == "unsubscribed"
    context.duplicates = {(recipient.id, "email")}
    assert suppression_reason(context, recipient, EffectivePreference(), "email") == "duplicate"
    context.duplicates = set()
    notification.category.critical = True  # a critical category (the context reads it once per chunk)
    context = chunk_context(notification, context.recipients, NOW)
    assert context.critical
    assert suppression_reason(context, recipient, opted_out, "email") == ""
    assert suppression_reason(context, recipient, opted_out, "sms") == "no_address"  # no phone
    context.listed = {(recipient.id, "email")}
    assert suppression_reason(context, recipient, opted_out, "email") == "suppressed_address"


def test_a_row_is_digested_deferred_rendered_inline_or_queued(tenant, make_template, make_recipients):
    make_template(default_channels=["email", "in_app"])
    make_recipients(1)
    notification = _notification(tenant, ["user-0"])
    context = chunk_context(notification, _recipients(tenant, ["user-0"]), NOW)
    (recipient,) = context.recipients
    morning = datetime(2030, 1, 16, 6, 0, tzinfo=UTC)

    digest = delivery_decide(context, recipient, EffectivePreference(digest="daily"), "email", _never)
    deferred = delivery_decide(context, recipient, EffectivePreference(), "email", lambda: morning)
    queued = delivery_decide(context, recipient, EffectivePreference(), "email", lambda: None)
    inline = delivery_decide(context, recipient, EffectivePreference(), "in_app", _never)

    assert digest == {"status": "digest"}
    assert deferred == {"status": "deferred", "next_attempt_at": morning}
    assert queued == {"status": "queued", "queued_at": NOW}
    assert list(inline) == ["rendered"] and inline["rendered"]["content"]["title"] == "Order 7 shipped"


def test_deciding_a_chunk_makes_one_row_per_recipient_and_channel(tenant, make_template, make_recipients):
    make_template(default_channels=["email", "sms", "in_app"])
    make_recipients(2)
    quiet = Recipient.objects.get(tenant=tenant, external_id="user-1")
    quiet.timezone = "Europe/Paris"
    quiet.save(update_fields=["timezone"])
    Preference.objects.create(tenant=tenant, recipient=quiet, quiet_hours_start=time(22), quiet_hours_end=time(7))
    notification = _notification(tenant, ["user-0", "user-1"])

    decisions = chunk_decide(chunk_context(notification, _recipients(tenant, ["user-0", "user-1"]), NOW))

    by_pair = {(row["recipient_id"], row["channel"]): row for row in decisions.rows}
    assert len(by_pair) == 6
    assert by_pair[(quiet.pk, "email")]["status"] == "deferred"
    assert by_pair[(quiet.pk, "email")]["next_attempt_at"] == datetime(2030, 1, 16, 6, 0, tzinfo=UTC)
    assert {row.get("status") for (_, channel), row in by_pair.items() if channel == "sms"} == {"suppressed"}
    assert dict(decisions.suppressed) == {("sms", "no_address"): 2}
    assert sorted(len(items) for items in decisions.inline.values()) == [2]  # in-app, sent in this transaction


def test_writing_inserts_each_row_once_and_counting_sees_only_what_went_in(tenant, make_template, make_recipients):
    make_template(default_channels=["email", "in_app"])
    make_recipients(2)
    notification = _notification(tenant, ["user-0", "user-1"])
    context = chunk_context(notification, _recipients(tenant, ["user-0", "user-1"]), NOW)
    decisions = chunk_decide(context)

    inserted = chunk_write(context, decisions, Audience())
    result = ChunkResult(chunk_id=0)
    chunk_count(decisions, inserted, result)

    assert len(inserted) == 4
    assert dict(result.statuses) == {"queued": 2, "delivered": 2}
    assert sorted(result.queued) == ["email"] and len(result.queued["email"]) == 2
    assert Delivery.objects.filter(notification=notification, channel="in_app", status="delivered").count() == 2
    # The same (notification, recipient, channel) again: nothing goes in, nothing is counted.
    again = chunk_decide(context)
    assert chunk_write(context, again, Audience()) == set()
    assert Delivery.objects.filter(notification=notification).count() == 4


def test_inbox_rows_are_written_delivered_with_the_adapters_answer_and_their_rendering(
    tenant, make_template, make_recipients
):
    make_template(default_channels=["email", "in_app"])
    make_recipients(2)
    Recipient.objects.filter(tenant=tenant, external_id="user-1").update(locale="fr")
    notification = _notification(tenant, ["user-0", "user-1"])
    context = chunk_context(notification, _recipients(tenant, ["user-0", "user-1"]), NOW)

    chunk_write(context, chunk_decide(context), Audience())

    rows = Delivery.objects.filter(notification=notification, channel="in_app").order_by("recipient__external_id")
    assert [(r.status, r.attempts, r.provider, r.sent_at, r.delivered_at) for r in rows] == [
        ("delivered", 1, "in_app", NOW, NOW)
    ] * 2
    assert [r.provider_message_id for r in rows] == [str(r.pk) for r in rows]  # what InAppAdapter.send answers
    assert [r.rendered for r in rows] == [
        {
            "to": "user-0",
            "locale": "default",
            "content": {"title": "Order 7 shipped", "body": "Track it.", "action_url": "/orders/7"},
        },
        {"to": "user-1", "locale": "fr", "content": {"title": "Commande 7 expédiée", "body": "Suivez-la."}},
    ]


def test_a_chunk_loads_only_the_recipient_columns_its_channels_and_templates_read(
    tenant, make_template, make_recipients
):
    make_template(default_channels=["email", "in_app"])  # the email text reads recipient.name
    make_recipients(1)
    notification = _notification(tenant, ["user-0"])
    assert set(recipient_columns(notification)) == {
        "id", "locale", "timezone", "unsubscribed_at", "email", "external_id", "name",
    }  # fmt: skip
    notification.channels = ["in_app"]  # its template still reads recipient.name (in the email)
    assert "email" not in recipient_columns(notification) and "data" not in recipient_columns(notification)


def test_the_recipient_names_a_template_reads_are_found_or_all_of_them_are_loaded():
    assert recipient_attributes_read({"t": "Hi {{ recipient.name }} {{ recipient['data'].plan }}"}) == {"name", "data"}
    assert recipient_attributes_read({"t": "{{ order_id }}", "u": ["{{ recipient.email|upper }}"]}) == {"email"}
    assert recipient_attributes_read({"t": "{{ recipient }}"}) is None  # as a whole
    assert recipient_attributes_read({"t": "{{ recipient|attr('phone') }}"}) is None
    assert recipient_attributes_read({"t": "{% set r = recipient %}{{ r.phone }}"}) is None
    assert recipient_attributes_read({"t": "{{ recipient[key] }}"}) is None  # a computed key


def test_ids_made_in_bulk_sort_in_creation_order_with_those_made_one_by_one():
    before = uuid7()
    many = uuid7_many(5000)  # more than one millisecond's counter
    after = uuid7()
    assert len(set(many)) == 5000
    assert [before, *many, after] == sorted([before, *many, after])
    assert {u.version for u in many} == {7}
