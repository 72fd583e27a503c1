"""Recipients, preferences and topics in Django admin: the API's validation applies there too, and a
row never points into another tenant."""

from __future__ import annotations

from typing import Any

import pytest

from apps.notifications.admin import PreferenceAdminForm, RecipientAdminForm
from apps.notifications.models import Category, Device, Preference, Recipient

pytestmark = pytest.mark.django_db

INLINES = {
    f"{prefix}-{field}": "0" for prefix in ("devices", "preferences") for field in ("TOTAL_FORMS", "INITIAL_FORMS")
}


def recipient_form(tenant: Any, **fields: Any) -> RecipientAdminForm:
    return RecipientAdminForm(
        data={"tenant": tenant.pk, "external_id": "ada", "data": "{}", "locale": "", "timezone": "", **fields}
    )


def test_a_phone_number_is_normalised_to_e164_or_refused(tenant):
    good = recipient_form(tenant, phone="+1 415-555-0100")
    bad = recipient_form(tenant, phone="0415 555 0100")

    assert good.is_valid(), good.errors
    assert good.cleaned_data["phone"] == "+14155550100"
    assert not bad.is_valid() and "E.164" in str(bad.errors["phone"])


def test_time_zones_locales_and_external_ids_follow_the_apis_rules(tenant):
    form = recipient_form(tenant, external_id="has space", timezone="Mars/Olympus", locale="not a locale")

    assert not form.is_valid()
    assert set(form.errors) >= {"external_id", "timezone", "locale"}


def test_a_preference_refuses_unknown_channels_and_another_tenants_category(tenant, other_tenant):
    theirs = Category.objects.create(tenant=other_tenant, key="orders")

    form = PreferenceAdminForm(data={"tenant": tenant.pk, "category": theirs.pk, "channels": '{"fax": true}'})

    assert not form.is_valid()
    assert "Unknown channel(s): fax" in str(form.errors["channels"])
    assert "another tenant" in str(form.errors["category"])


def test_a_recipients_devices_and_preferences_added_inline_join_its_tenant(tenant, admin_client):
    orders = Category.objects.create(tenant=tenant, key="orders")
    response = admin_client.post(
        "/admin/notifications/recipient/add/",
        {
            "tenant": tenant.pk,
            "external_id": "ada",
            "phone": "+14155550100",
            "data": "{}",
            **INLINES,
            "devices-TOTAL_FORMS": "1",
            "devices-0-platform": "ios",
            "devices-0-token": "tok-1",
            "devices-0-active": "on",
            "preferences-TOTAL_FORMS": "1",
            "preferences-0-category": orders.pk,
            "preferences-0-channels": '{"sms": false}',
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    recipient = Recipient.objects.get(external_id="ada")
    assert Device.objects.get(recipient=recipient).tenant_id == tenant.pk
    preference = Preference.objects.get(recipient=recipient)
    assert (preference.tenant_id, preference.channels) == (tenant.pk, {"sms": False})


def test_tenant_defaults_and_topic_members_are_managed_in_admin(admin_client):
    assert admin_client.get("/admin/notifications/preference/").status_code == 200
    assert admin_client.get("/admin/notifications/topic/add/").status_code == 200
