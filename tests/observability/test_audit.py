"""The audit log: who created, rotated and revoked keys; a tenant-scoped, filterable API; admin; retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.core.actors import Actor
from apps.core.periodic import periodic_jobs
from apps.observability.audit import audit_purge, audit_record
from apps.observability.models import AuditEntry
from apps.observability.tasks import purge_audit
from apps.tenancy.models import ApiKey
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def entries(**filters):
    return list(AuditEntry.objects.filter(**filters).order_by("id"))


def test_creating_rotating_and_revoking_a_key_is_audited_with_who_and_the_request(api, tenant):
    caller = api.api_key.partition(".")[0]
    created = api.post("/api/v1/api-keys/", {"name": "ci", "scopes": ["read"]}, HTTP_X_REQUEST_ID="req-create")
    assert created.status_code == 201
    prefix, clear = created.json()["prefix"], created.json()["key"]
    key = ApiKey.objects.get(prefix=prefix)

    rotated = api.post(
        f"/api/v1/api-keys/{prefix}/rotate/",
        {"old_key_expires_at": (timezone.now() + timedelta(hours=1)).isoformat()},
        HTTP_X_REQUEST_ID="req-rotate",
    )
    assert rotated.status_code == 201
    assert api.post(f"/api/v1/api-keys/{prefix}/revoke/", HTTP_X_REQUEST_ID="req-revoke").status_code == 200
    assert api.post(f"/api/v1/api-keys/{prefix}/revoke/").status_code == 200  # again: nothing new happened

    logged = entries(tenant=tenant, target_id=key.prefix)  # never the pk: it holds the hash
    assert [(e.action, e.actor_type, e.actor_id, e.request_id) for e in logged] == [
        ("api_key.created", "api_key", caller, "req-create"),
        ("api_key.rotated", "api_key", caller, "req-rotate"),
        ("api_key.revoked", "api_key", caller, "req-revoke"),
    ]
    assert {e.target_type for e in logged} == {"tenancy.apikey"}
    assert logged[0].data == {"prefix": prefix, "name": "ci", "scopes": ["read"], "expires_at": None}
    assert logged[1].data["new_prefix"] == rotated.json()["prefix"]
    secret = clear.partition(".")[2]
    assert all(secret not in str(e.data) for e in AuditEntry.objects.all())
    assert rotated.json()["key"].partition(".")[2] not in str([e.data for e in AuditEntry.objects.all()])


def test_a_failed_change_leaves_no_audit_entry(api, tenant):
    before = AuditEntry.objects.count()
    response = api.post("/api/v1/api-keys/", {"name": "x", "expires_at": "2000-01-01T00:00:00Z"})
    assert response.status_code == 422  # a past expiry
    assert AuditEntry.objects.count() == before


def test_the_audit_api_shows_only_the_callers_tenant(api, tenant, other_api, other_tenant):
    mine = audit_record(action="template.updated", tenant=tenant, target_type="notifications.template", target_id="t1")
    theirs = audit_record(action="template.updated", tenant=other_tenant, target_type="notifications.template")
    platform = audit_record(action="tenant.created", tenant=None)

    listed = api.get("/api/v1/audit/?action=template.updated").json()
    assert [row["id"] for row in listed["results"]] == [mine.pk]
    assert api.get(f"/api/v1/audit/{theirs.pk}/").status_code == 404
    assert api.get(f"/api/v1/audit/{platform.pk}/").status_code == 404
    assert other_api.get(f"/api/v1/audit/{mine.pk}/").status_code == 404

    row = api.get(f"/api/v1/audit/{mine.pk}/").json()
    assert row["action"] == "template.updated"
    assert row["actor"] == {"type": "system", "id": ""}
    assert row["target"] == {"type": "notifications.template", "id": "t1"}
    assert set(row) == {"id", "created_at", "action", "actor", "target", "data", "request_id"}


def test_the_audit_api_filters_by_action_actor_target_and_time(api, tenant):
    old = audit_record(
        action="template.created", tenant=tenant, actor=Actor(kind="api_key", id="sbx_AAAA1111"), target_id="1"
    )
    AuditEntry.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    deleted = audit_record(
        action="template.deleted",
        tenant=tenant,
        actor=Actor(kind="staff", id="alice"),
        target_type="notifications.template",
        target_id="1",
    )
    rule = audit_record(
        action="rule.created",
        tenant=tenant,
        actor=Actor(kind="api_key", id="sbx_AAAA1111"),
        target_type="events.rule",
        target_id="9",
    )

    def ids(query: str) -> list[int]:
        response = api.get(f"/api/v1/audit/?{query}")
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids("action=template.deleted") == [deleted.pk]
    assert ids("action=template.") == [deleted.pk, old.pk]  # a prefix; newest first
    assert ids("action=rule.created,template.deleted") == [rule.pk, deleted.pk]
    assert ids("actor=staff:alice") == [deleted.pk]
    assert ids("actor=sbx_AAAA1111") == [rule.pk, old.pk]
    assert ids("actor_type=api_key&target=events.rule:9") == [rule.pk]
    assert ids("target=1") == [deleted.pk, old.pk]
    since = (timezone.now() - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert deleted.pk in ids(f"since={since}") and old.pk not in ids(f"since={since}")
    assert ids(f"until={since}") == [old.pk]


def test_a_bad_filter_is_a_validation_error_with_the_field(api):
    response = api.get("/api/v1/audit/?since=yesterday")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "since" in response.json()["fields"]


def test_the_audit_api_pages_with_limit_and_offset(api, tenant):
    for i in range(5):
        audit_record(action="template.updated", tenant=tenant, target_id=str(i))
    page = api.get("/api/v1/audit/?action=template.updated&limit=2&offset=2").json()
    assert page["count"] == 5
    assert [row["target"]["id"] for row in page["results"]] == ["2", "1"]
    assert page["next"] and page["previous"]


def test_the_audit_log_is_read_only_and_needs_a_key_that_may_read(api, tenant):
    assert api.post("/api/v1/audit/", {"action": "x"}).status_code == 405
    writer = client_for(tenant, scopes=["tasks:write"])  # any scope implies read
    assert writer.get("/api/v1/audit/").status_code == 200
    nothing = client_for(tenant, scopes=[])
    response = nothing.get("/api/v1/audit/")
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


@pytest.fixture
def staff_client(tenant) -> Client:
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_admin_lists_and_filters_audit_entries_but_cannot_change_them(staff_client, tenant):
    entry = audit_record(
        action="api_key.revoked", tenant=tenant, actor=Actor(kind="staff", id="alice"), data={"prefix": "sbx_x"}
    )

    listing = staff_client.get("/admin/observability/auditentry/?action=api_key.revoked&actor_type=staff")
    assert listing.status_code == 200
    assert b"api_key.revoked" in listing.content
    detail = staff_client.get(f"/admin/observability/auditentry/{entry.pk}/change/")
    assert detail.status_code == 200
    assert b"sbx_x" in detail.content and b'name="_save"' not in detail.content
    assert staff_client.get("/admin/observability/auditentry/add/").status_code == 403
    assert staff_client.post(f"/admin/observability/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def _aged(days: float, **kwargs) -> AuditEntry:
    entry = audit_record(action="test.aged", **kwargs)
    AuditEntry.objects.filter(pk=entry.pk).update(created_at=timezone.now() - timedelta(days=days))
    return entry


def test_purge_keeps_entries_for_the_tenants_retention_or_the_default(tenant, other_tenant, settings):
    settings.AUDIT_RETENTION_DAYS = 30
    other_tenant.settings = {"retention_days": {"audit": 7}}
    other_tenant.save()
    kept = [_aged(20, tenant=tenant), _aged(5, tenant=other_tenant), _aged(20, tenant=None)]
    gone = [_aged(40, tenant=tenant), _aged(10, tenant=other_tenant), _aged(40, tenant=None)]
    purged_before = REGISTRY.get_sample_value("signalbox_rows_purged_total", {"table": "audit"}) or 0.0

    assert audit_purge() == 3

    remaining = set(AuditEntry.objects.filter(action="test.aged").values_list("pk", flat=True))
    assert remaining == {e.pk for e in kept}
    assert not remaining & {e.pk for e in gone}
    assert REGISTRY.get_sample_value("signalbox_rows_purged_total", {"table": "audit"}) == purged_before + 3
    assert audit_purge() == 0  # nothing left to do: safe to rerun


def test_purge_task_has_a_permanent_name_runs_on_maintenance_and_is_scheduled():
    assert purge_audit.name == "signalbox.maintenance.purge_audit"
    assert purge_audit.queue == "maintenance"  # type: ignore[attr-defined]
    (job,) = [job for job in periodic_jobs() if job.task == purge_audit.name]
    assert job.queue == "maintenance" and job.every_seconds <= 24 * 3600
