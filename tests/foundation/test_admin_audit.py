"""API keys in Django admin go through the audited services: made, changed and revoked on the record."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from apps.observability.models import AuditEntry
from apps.tenancy.models import ApiKey
from apps.tenancy.services import api_key_create

pytestmark = pytest.mark.django_db


def change_form(key: ApiKey, **changes: object) -> dict[str, object]:
    """What the admin change page posts for `key`, with `changes` applied (a checkbox is sent when on)."""
    data: dict[str, object] = {
        "name": key.name,
        "scopes": json.dumps(key.scopes),
        "expiry_date_0": "",
        "expiry_date_1": "",
        **changes,
    }
    return {k: v for k, v in data.items() if v is not False}


def test_a_key_added_in_admin_is_created_by_the_service_and_audited(admin_client, admin_user, tenant):
    response = admin_client.post(
        "/admin/tenancy/apikey/add/",
        {"name": "deploy", "tenant": tenant.pk, "scopes": '["read"]', "expiry_date_0": "", "expiry_date_1": ""},
        follow=True,
    )

    assert response.status_code == 200
    key = ApiKey.objects.get(name="deploy")
    assert (key.tenant_id, key.scopes, key.created_by) == (tenant.pk, ["read"], f"staff:{admin_user}")
    assert any(str(m).startswith(f"The key is {key.prefix}.") for m in get_messages(response.wsgi_request))
    entry = AuditEntry.objects.get(action="api_key.created", target_id=key.prefix)
    assert (entry.tenant_id, entry.actor_type, entry.actor_id) == (tenant.pk, "staff", admin_user.get_username())
    assert entry.data["prefix"] == key.prefix and entry.data["scopes"] == ["read"]


def test_unknown_scopes_and_a_past_expiry_are_refused_by_the_admin_form(admin_client, tenant):
    response = admin_client.post(
        "/admin/tenancy/apikey/add/",
        {
            "name": "bad",
            "tenant": tenant.pk,
            "scopes": '["root"]',
            "expiry_date_0": (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%d"),
            "expiry_date_1": "00:00:00",
        },
    )

    assert response.status_code == 200  # the form again, with its errors
    page = response.content.decode()
    assert "Unknown scopes: root" in page and "Expiry must be in the future." in page
    assert not ApiKey.objects.filter(name="bad").exists()
    assert not AuditEntry.objects.filter(action="api_key.created").exists()


def test_changing_a_key_in_admin_is_audited_with_old_and_new_values(admin_client, admin_user, tenant):
    key, _ = api_key_create(tenant=tenant, name="deploy", scopes=["read"])

    response = admin_client.post(
        f"/admin/tenancy/apikey/{key.pk}/change/", change_form(key, name="ci", scopes='["events:write", "read"]')
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.scopes) == ("ci", ["events:write", "read"])
    entry = AuditEntry.objects.get(action="api_key.updated", target_id=key.prefix)
    assert (entry.tenant_id, entry.actor_type, entry.actor_id) == (tenant.pk, "staff", admin_user.get_username())
    assert entry.data == {
        "prefix": key.prefix,
        "changes": {"name": ["deploy", "ci"], "scopes": [["read"], ["events:write", "read"]]},
    }


def test_revoking_a_key_in_admin_is_audited_and_final(admin_client, tenant):
    key, _ = api_key_create(tenant=tenant, name="deploy", scopes=["read"])

    revoked = admin_client.post(f"/admin/tenancy/apikey/{key.pk}/change/", change_form(key, revoked="on"))
    # The change page of a revoked key has no `revoked` field: posting it off changes nothing.
    again = admin_client.post(f"/admin/tenancy/apikey/{key.pk}/change/", change_form(key, revoked=False))

    assert revoked.status_code == again.status_code == 302

    key.refresh_from_db()
    assert key.revoked is True
    actions = AuditEntry.objects.filter(target_id=key.prefix).values_list("action", flat=True)
    assert sorted(actions) == ["api_key.created", "api_key.revoked"]
