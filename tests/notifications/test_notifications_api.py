"""POST /notifications/: validation before anything changes, idempotency, list/detail with per-channel
counts, cancel, scopes and tenant isolation. (The pipeline behind it: test_pipeline.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.notifications.models import Delivery, Notification, Recipient, Topic
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications/"


def _post(api, body, **headers):
    return api.post(URL, body, format="json", **headers)


def test_post_answers_202_with_a_location(api, make_template, make_recipients):
    make_template()
    make_recipients(2)
    response = _post(
        api, {"template": "order_shipped", "payload": {"order_id": "A-1"}, "recipients": ["user-0", "user-1"]}
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "accepted"
    assert response["Location"] == f"/api/v1/notifications/{body['id']}/" == body["url"]
    notification = Notification.objects.get(pk=body["id"])
    assert notification.channels == ["email", "in_app"] and notification.priority == "normal"
    assert len(notification.recipient_ids or []) == 2


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"template": "nope", "payload": {}, "recipients": ["user-0"]}, "template", "No template 'nope'"),
        ({"template": "order_shipped", "payload": {}, "recipients": ["user-0"]}, "payload", "order_id"),
        ({"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["ghost"]}, "recipients", "ghost"),
        ({"template": "order_shipped", "payload": {"order_id": 1}, "topic": "nope"}, "topic", "No topic"),
        (
            {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"], "channels": ["fax"]},
            "channels",
            "fax",
        ),
        (
            {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"], "channels": ["chat"]},
            "channels",
            "No content",
        ),
        ({"template": "order_shipped", "payload": {"order_id": 1}}, "recipients", "one of them"),
        (
            {
                "template": "order_shipped",
                "payload": {"order_id": 1},
                "recipients": [{"external_id": "new", "phone": "555"}],
            },
            "recipients",
            "E.164",
        ),
        (
            {"content": {"sms": {"text": "Hi {{ nme }}"}}, "payload": {"name": "x"}, "recipients": ["user-0"]},
            "content",
            "nme",
        ),
        (
            {"content": {"sms": {"text": "Hi {{ name"}}, "payload": {"name": "x"}, "recipients": ["user-0"]},
            "content",
            "Line 1",
        ),
    ],
)
def test_invalid_requests_answer_400_with_fields_and_change_nothing(
    api, make_template, make_recipients, body, field, fragment
):
    make_template()
    make_recipients(1)
    response = _post(api, body)
    assert response.status_code == 400, response.json()
    error = response.json()
    assert error["code"] == "validation_error"
    assert field in error["fields"] and fragment in str(error["fields"][field]), error
    assert Notification.objects.count() == 0
    assert not Recipient.objects.filter(external_id="new").exists()


def test_an_archived_template_cannot_be_sent(api, make_template, make_recipients):
    make_template()
    make_recipients(1)
    api.delete("/api/v1/templates/order_shipped/")
    response = _post(api, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"]})
    assert response.status_code == 400 and "archived" in str(response.json()["fields"]["template"])


def test_inline_recipients_are_upserted_with_the_intent(api, make_template):
    make_template()
    response = _post(
        api,
        {
            "template": "order_shipped",
            "payload": {"order_id": 1},
            "recipients": [
                {"external_id": "walk-in", "email": "w@example.com", "phone": "+1 415 555 0100", "locale": "fr_CA"}
            ],
        },
    )
    assert response.status_code == 202
    recipient = Recipient.objects.get(external_id="walk-in")
    assert (recipient.phone, recipient.locale) == ("+14155550100", "fr-CA")


def test_same_idempotency_key_and_body_give_the_same_notification(api, make_template, make_recipients):
    make_template()
    make_recipients(1)
    body = {"template": "order_shipped", "payload": {"order_id": "1"}, "recipients": ["user-0"]}
    first = _post(api, body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = _post(api, body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true" and again["Location"] == first["Location"]
    assert Notification.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_refused(api, make_template, make_recipients):
    make_template()
    make_recipients(1)
    _post(
        api,
        {"template": "order_shipped", "payload": {"order_id": "1"}, "recipients": ["user-0"]},
        HTTP_IDEMPOTENCY_KEY="k-2",
    )
    other = _post(
        api,
        {"template": "order_shipped", "payload": {"order_id": "2"}, "recipients": ["user-0"]},
        HTTP_IDEMPOTENCY_KEY="k-2",
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Notification.objects.count() == 1


def test_a_key_reused_for_another_body_after_its_record_expired_is_still_refused(api, make_template, make_recipients):
    from apps.core.models import IdempotencyRecord

    make_template()
    make_recipients(1)
    body = {"template": "order_shipped", "payload": {"order_id": "1"}, "recipients": ["user-0"]}
    first = _post(api, body, HTTP_IDEMPOTENCY_KEY="k-3")
    IdempotencyRecord.objects.all().delete()  # what the 24-hour expiry does

    other = _post(api, {**body, "payload": {"order_id": "2"}}, HTTP_IDEMPOTENCY_KEY="k-3")
    same = _post(api, body, HTTP_IDEMPOTENCY_KEY="k-3")

    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert same.json()["id"] == first.json()["id"]
    assert Notification.objects.count() == 1


def test_code_callers_get_the_same_notification_for_the_same_idempotency_key(tenant, make_template, make_recipients):
    from apps.notifications.services.notifications import notification_create

    make_template()
    make_recipients(1)
    first = notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": 1},
        recipients=["user-0"],
        idempotency_key="rule:1",
    )
    again = notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": 1},
        recipients=["user-0"],
        idempotency_key="rule:1",
    )
    assert first.pk == again.pk


def test_detail_and_list_show_counts_per_channel(api, tenant, make_template, make_recipients):
    make_template()
    make_recipients(2, prefix="ok")
    make_recipients(1, prefix="mute", email="")
    response = _post(
        api, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["ok-0", "ok-1", "mute-0"]}
    )
    notification_id = response.json()["id"]
    for chunk_id in notification_fan_out(notification_id=notification_id):
        fanout_chunk_run(chunk_id=chunk_id)

    detail = api.get(f"{URL}{notification_id}/").json()
    assert (
        detail["status"] == "dispatched" and detail["template"] == "order_shipped" and detail["template_version"] == 1
    )
    assert detail["counts"] == {"email": {"queued": 2, "suppressed": 1}, "in_app": {"delivered": 3}}
    assert detail["totals"] == {"queued": 2, "suppressed": 1, "delivered": 3}
    listed = api.get(URL, {"status": "dispatched", "template": "order_shipped"}).json()
    assert listed["count"] == 1 and listed["results"][0]["counts"] == detail["counts"]
    assert api.get(URL, {"created_after": (timezone.now() + timedelta(minutes=1)).isoformat()}).json()["count"] == 0

    deliveries = api.get(
        "/api/v1/deliveries/", {"notification": notification_id, "channel": "email", "status": "suppressed"}
    ).json()
    assert deliveries["count"] == 1 and deliveries["results"][0]["recipient"] == "mute-0"
    assert deliveries["results"][0]["suppression_reason"] == "no_address"
    one = api.get(f"/api/v1/deliveries/{deliveries['results'][0]['id']}/").json()
    assert one["attempts_log"] == [] and "rendered" in one
    assert one["flow_run"] is None  # sent without a flow


def test_cancel_stops_what_is_not_sent(api, make_template, make_recipients):
    make_template()
    make_recipients(2)
    notification_id = _post(
        api, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0", "user-1"]}
    ).json()["id"]
    for chunk_id in notification_fan_out(notification_id=notification_id):
        fanout_chunk_run(chunk_id=chunk_id)
    response = api.post(f"{URL}{notification_id}/cancel/")
    assert response.status_code == 200
    assert response.json()["deliveries_cancelled"] == 2  # the two emails; in-app items were already delivered
    assert response.json()["notification"]["status"] == "cancelled"
    assert set(
        Delivery.objects.filter(notification_id=notification_id, channel="email").values_list("status", flat=True)
    ) == {"cancelled"}
    assert api.post(f"{URL}{notification_id}/cancel/").json()["deliveries_cancelled"] == 0  # harmless twice


def test_a_scheduled_notification_waits_and_can_be_cancelled(api, make_template, make_recipients):
    make_template()
    make_recipients(1)
    later = (timezone.now() + timedelta(hours=2)).isoformat()
    body = _post(
        api, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"], "scheduled_at": later}
    ).json()
    assert body["status"] == "scheduled"
    assert api.post(f"{URL}{body['id']}/cancel/").json()["notification"]["status"] == "cancelled"
    assert Notification.objects.get(pk=body["id"]).status == "cancelled"


def test_writes_need_the_notifications_scope(tenant, make_template, make_recipients):
    make_template()
    make_recipients(1)
    reader = client_for(tenant, ["read"])
    response = _post(reader, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"]})
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"
    assert reader.get(URL).status_code == 200
    writer = client_for(tenant, ["notifications:write"])
    assert (
        _post(writer, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"]}).status_code
        == 202
    )


def test_other_tenants_objects_are_not_found(api, other_api, other_tenant, make_template, make_recipients):
    make_template(for_tenant=other_tenant)
    make_recipients(1, for_tenant=other_tenant)
    Topic.objects.create(tenant=other_tenant, key="theirs")
    theirs = _post(
        other_api, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"]}
    ).json()["id"]
    for chunk_id in notification_fan_out(notification_id=theirs):
        fanout_chunk_run(chunk_id=chunk_id)
    delivery = Delivery.objects.filter(notification_id=theirs).first()
    assert delivery is not None

    assert api.get(f"{URL}{theirs}/").status_code == 404
    assert api.post(f"{URL}{theirs}/cancel/").status_code == 404
    assert api.get(f"/api/v1/deliveries/{delivery.pk}/").status_code == 404
    assert api.get("/api/v1/templates/order_shipped/").status_code == 404
    assert api.get("/api/v1/recipients/user-0/").status_code == 404
    assert api.get("/api/v1/topics/theirs/").status_code == 404
    # ... and they cannot be used in our notifications either
    fields = _post(api, {"template": "order_shipped", "payload": {"order_id": 1}, "recipients": ["user-0"]}).json()[
        "fields"
    ]
    assert "template" in fields
    assert api.get(URL).json()["count"] == 0 and api.get("/api/v1/deliveries/").json()["count"] == 0
