"""Tenant isolation: a key sees only its tenant; a platform key acts for a named tenant; nobody else can."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.observability.models import AuditEntry
from apps.tenancy.services import api_key_create

pytestmark = pytest.mark.django_db


def test_another_tenants_key_answers_404_not_403(api, other_api, other_tenant):
    other_key, _ = api_key_create(tenant=other_tenant, name="theirs", scopes=["admin"])
    response = api.get(f"/api/v1/api-keys/{other_key.prefix}/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert other_key.prefix not in str(api.get("/api/v1/api-keys/").json())


def test_tenant_key_cannot_use_x_tenant_id(api, other_tenant):
    response = api.get("/api/v1/tenant/", HTTP_X_TENANT_ID=str(other_tenant.pk))
    assert response.status_code == 403
    assert response.json()["code"] == "cross_tenant"


def test_platform_key_acts_for_the_named_tenant(tenant, other_tenant):
    _, clear = api_key_create(tenant=None, name="ops", platform=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert client.get("/api/v1/tenant/").json()["code"] == "tenant_required"
    assert client.get("/api/v1/tenant/", HTTP_X_TENANT_ID="globex").json()["slug"] == "globex"
    assert client.get("/api/v1/tenant/", HTTP_X_TENANT_ID=str(tenant.pk)).json()["slug"] == "acme"
    assert client.get("/api/v1/tenant/", HTTP_X_TENANT_ID="nobody").status_code == 404


def test_each_use_of_a_platform_key_is_in_that_tenants_audit_log(tenant, other_tenant):
    key, clear = api_key_create(tenant=None, name="ops", platform=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")

    client.get("/api/v1/tenant/", HTTP_X_TENANT_ID="globex")
    client.get("/api/v1/recipients/", HTTP_X_TENANT_ID="globex")

    entries = AuditEntry.objects.filter(action="platform_key.acted_for_tenant").order_by("created_at")
    assert [(e.tenant_id, e.actor_id, e.data["path"]) for e in entries] == [
        (other_tenant.pk, key.prefix, "/api/v1/tenant/"),
        (other_tenant.pk, key.prefix, "/api/v1/recipients/"),
    ]
    assert not AuditEntry.objects.filter(tenant=tenant, action="platform_key.acted_for_tenant").exists()


def test_inactive_tenant_keys_are_refused(api, tenant):
    tenant.is_active = False
    tenant.save()
    response = api.get("/api/v1/tenant/")
    assert response.status_code == 401
    assert response.json()["code"] == "tenant_inactive"
