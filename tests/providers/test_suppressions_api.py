"""The suppression list API: `GET /api/v1/suppressions/` (filtered, the tenant's rows only) and
`DELETE /api/v1/suppressions/<id>/`, which allows the address again and is audited."""

from __future__ import annotations

from typing import Any

import pytest

from apps.notifications.models import Delivery, Notification, Suppression
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.sending import deliveries_send
from apps.notifications.services.suppressions import suppressions_add
from apps.observability.models import AuditEntry
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

CONTENT = {"email": {"subject": "Your order", "text": "It shipped."}}


def listed(tenant: Any, channel: str, address: str, reason: str) -> dict[str, Any]:
    return {"tenant_id": tenant.pk, "channel": channel, "address": address, "reason": reason, "source": "test"}


@pytest.fixture
def suppressions(tenant: Any, other_tenant: Any) -> dict[str, Suppression]:
    """Three of acme's addresses and one of globex's (the same email as one of acme's)."""
    suppressions_add(
        [
            listed(tenant, "email", "ada@example.com", Suppression.Reason.HARD_BOUNCE),
            listed(tenant, "email", "bob@example.com", Suppression.Reason.SPAM_REPORT),
            listed(tenant, "sms", "+14155550100", Suppression.Reason.UNSUBSCRIBED),
            listed(other_tenant, "email", "ada@example.com", Suppression.Reason.HARD_BOUNCE),
        ]
    )
    rows = Suppression.objects.select_related("tenant")
    return {f"{s.tenant.slug}:{s.address}": s for s in rows}


def addresses(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.json()
    return sorted(row["address"] for row in answer.json()["results"])


def test_the_list_shows_only_the_tenants_rows_and_filters_them(api: Any, suppressions: dict[str, Suppression]):
    everything = api.get("/api/v1/suppressions/")

    assert everything.json()["count"] == 3
    assert addresses(everything) == ["+14155550100", "ada@example.com", "bob@example.com"]
    assert {r["id"] for r in everything.json()["results"]} == {
        s.pk for key, s in suppressions.items() if key.startswith("acme:")
    }
    assert addresses(api.get("/api/v1/suppressions/?channel=sms")) == ["+14155550100"]
    assert addresses(api.get("/api/v1/suppressions/?reason=hard_bounce&reason=spam_report")) == [
        "ada@example.com",
        "bob@example.com",
    ]
    assert addresses(api.get("/api/v1/suppressions/?address=Ada@Example.com")) == ["ada@example.com"]
    page = api.get("/api/v1/suppressions/?limit=2").json()
    assert (len(page["results"]), page["count"], bool(page["next"])) == (2, 3, True)


def test_an_unknown_filter_value_is_a_validation_error(api: Any, suppressions: dict[str, Suppression]):
    answer = api.get("/api/v1/suppressions/?channel=push")

    assert answer.status_code == 400
    assert answer.json()["code"] == "validation_error"


def test_another_tenants_row_cannot_be_deleted(other_api: Any, suppressions: dict[str, Suppression]):
    answer = other_api.delete(f"/api/v1/suppressions/{suppressions['acme:bob@example.com'].pk}/")

    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"
    assert Suppression.objects.filter(pk=suppressions["acme:bob@example.com"].pk).exists()


def test_a_read_only_key_lists_but_cannot_delete(tenant: Any, suppressions: dict[str, Suppression]):
    reader = client_for(tenant, scopes=["read"])

    assert reader.get("/api/v1/suppressions/").status_code == 200
    answer = reader.delete(f"/api/v1/suppressions/{suppressions['acme:ada@example.com'].pk}/")

    assert answer.status_code == 403
    assert answer.json()["code"] == "missing_scope"
    assert Suppression.objects.filter(pk=suppressions["acme:ada@example.com"].pk).exists()
    assert not AuditEntry.objects.filter(action="suppression.deleted").exists()


def send_email_to_ada(tenant: Any) -> Delivery:
    notification = notification_create(
        tenant=tenant,
        content=CONTENT,
        recipients=[{"external_id": "ada", "email": "ada@example.com"}],
        channels=["email"],
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    queued = Delivery.objects.filter(notification=notification, status="queued").values_list("pk", flat=True)
    deliveries_send(delivery_ids=list(queued))
    return Delivery.objects.get(notification=notification)


def test_a_deleted_entry_allows_the_address_again_and_is_audited(
    api: Any, tenant: Any, suppressions: dict[str, Suppression]
):
    tenant.settings = {**tenant.settings, "channel_providers": {"email": ["recording_sink"]}}
    tenant.save(update_fields=["settings"])
    ada = suppressions["acme:ada@example.com"]
    before = send_email_to_ada(tenant)
    assert (before.status, before.suppression_reason) == ("suppressed", "suppressed_address")

    answer = api.delete(f"/api/v1/suppressions/{ada.pk}/")

    assert answer.status_code == 204
    after = send_email_to_ada(tenant)
    assert (after.status, after.suppression_reason) == ("sent", "")
    assert Notification.objects.get(pk=after.notification_id).status == "completed"
    # globex's entry for the same address is its own, and stays.
    assert Suppression.objects.filter(tenant__slug="globex", address="ada@example.com").exists()
    [entry] = AuditEntry.objects.filter(action="suppression.deleted")
    assert entry.tenant_id == tenant.pk
    assert (entry.target_type, entry.target_id) == ("notifications.suppression", str(ada.pk))
    assert entry.actor_type == "api_key" and api.api_key.startswith(entry.actor_id)
    assert entry.data == {"channel": "email", "address": "ada@example.com", "reason": "hard_bounce"}


def test_the_audit_entry_of_a_webhook_url_keeps_only_its_host(api: Any, tenant: Any):
    hook = "https://hooks.slack.com/services/T000/B000/the-secret-part"
    suppressions_add([listed(tenant, "chat", hook, Suppression.Reason.GONE)])

    answer = api.delete(f"/api/v1/suppressions/{Suppression.objects.get(address=hook).pk}/")

    assert answer.status_code == 204
    entry = AuditEntry.objects.get(action="suppression.deleted")
    assert entry.data["address"] == "https://hooks.slack.com/****"
    assert "the-secret-part" not in str(entry.data)
