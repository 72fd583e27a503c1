"""API keys: hashed at rest, shown once, scoped, revocable, expiring, rotatable; clear 401/403 errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.tenancy.models import ApiKey
from apps.tenancy.services import api_key_create
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_key_is_stored_only_as_a_hash(tenant):
    key, clear = api_key_create(tenant=tenant, name="ci")
    assert clear.startswith("sbx_")
    assert clear.startswith(key.prefix + ".")
    row = ApiKey.objects.get(pk=key.pk)
    secret = clear.partition(".")[2]
    assert secret not in row.hashed_key and secret not in row.id
    assert row.hashed_key.startswith("sha512$$")


def test_valid_key_reads_its_tenant(api, tenant):
    response = api.get("/api/v1/tenant/")
    assert response.status_code == 200
    assert response.json()["slug"] == "acme"
    assert ApiKey.objects.get(tenant=tenant).last_used_at is not None


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer sbx_nope1234.wrongsecret", "invalid_api_key"),
        ("Bearer not-a-key", "invalid_api_key"),
        ("Bearer a b", "malformed_credentials"),
    ],
)
def test_bad_credentials_get_a_structured_401(tenant, header, code):
    client = APIClient()
    response = client.get("/api/v1/tenant/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_missing_credentials_get_401(db):
    response = APIClient().get("/api/v1/tenant/")
    assert response.status_code == 401
    assert response.json() == {
        "code": "not_authenticated",
        "message": "Authentication credentials were not provided.",
        "fields": {},
    }


def test_right_prefix_wrong_secret_is_refused(tenant):
    key, _ = api_key_create(tenant=tenant, name="ci")
    client = APIClient()
    response = client.get("/api/v1/tenant/", HTTP_AUTHORIZATION=f"Bearer {key.prefix}.{'x' * 32}")
    assert response.status_code == 401


def test_revoked_key_is_refused(tenant):
    key, clear = api_key_create(tenant=tenant, name="ci")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert api.get("/api/v1/tenant/").status_code == 200
    admin = client_for(tenant, ["admin"])
    assert admin.post(f"/api/v1/api-keys/{key.prefix}/revoke/").status_code == 200
    response = api.get("/api/v1/tenant/")
    assert response.status_code == 401
    assert response.json()["code"] == "revoked_api_key"


def test_expired_key_is_refused(tenant):
    key, clear = api_key_create(tenant=tenant, name="ci", expires_at=timezone.now() + timedelta(seconds=60))
    ApiKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))
    response = APIClient().get("/api/v1/tenant/", HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert response.status_code == 401
    assert response.json()["code"] == "expired_api_key"


def test_a_key_without_the_scope_gets_403(tenant):
    reader = client_for(tenant, ["read"])
    assert reader.get("/api/v1/tenant/").status_code == 200
    response = reader.post("/api/v1/api-keys/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


def test_create_shows_the_key_once(tenant):
    admin = client_for(tenant, ["admin"])
    response = admin.post("/api/v1/api-keys/", {"name": "deploy", "scopes": ["read"]}, format="json")
    assert response.status_code == 201
    clear = response.json()["key"]
    listed = admin.get(f"/api/v1/api-keys/{response.json()['prefix']}/").json()
    assert "key" not in listed
    assert clear not in str(admin.get("/api/v1/api-keys/").json())
    assert APIClient().get("/api/v1/tenant/", HTTP_AUTHORIZATION=f"Bearer {clear}").status_code == 200


def test_unknown_scope_is_a_field_error(tenant):
    admin = client_for(tenant, ["admin"])
    response = admin.post("/api/v1/api-keys/", {"name": "x", "scopes": ["root"]}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert "scopes" in body["fields"]
    assert ApiKey.objects.filter(name="x").count() == 0


def test_rotation_keeps_the_old_key_until_its_expiry(tenant):
    admin_key, admin_clear = api_key_create(tenant=tenant, name="admin", scopes=["admin"])
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_clear}")
    until = timezone.now() + timedelta(hours=1)
    response = admin.post(f"/api/v1/api-keys/{admin_key.prefix}/rotate/", {"old_key_expires_at": until.isoformat()})
    assert response.status_code == 201
    new_clear = response.json()["key"]
    assert new_clear != admin_clear
    # Both work during the overlap.
    assert admin.get("/api/v1/tenant/").status_code == 200
    assert APIClient().get("/api/v1/tenant/", HTTP_AUTHORIZATION=f"Bearer {new_clear}").status_code == 200
    # After the chosen expiry, only the new one.
    ApiKey.objects.filter(pk=admin_key.pk).update(expiry_date=timezone.now() - timedelta(seconds=1))
    assert admin.get("/api/v1/tenant/").status_code == 401
    assert APIClient().get("/api/v1/tenant/", HTTP_AUTHORIZATION=f"Bearer {new_clear}").status_code == 200
