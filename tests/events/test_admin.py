"""Django admin for events and workflows: pages render, writes go through the services."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from apps.events.models import Rule, WebhookEndpoint, WebhookMessage
from apps.observability.models import AuditEntry

pytestmark = pytest.mark.django_db

PAGES = [
    "/admin/events/event/",
    "/admin/events/rule/",
    "/admin/events/rule/add/",
    "/admin/events/webhookendpoint/",
    "/admin/events/webhookendpoint/add/",
    "/admin/events/webhookmessage/",
    "/admin/workflows/workflowdefinition/",
    "/admin/workflows/workflowdefinition/add/",
    "/admin/workflows/workflowinstance/",
    "/admin/workflows/transitionintent/",
]


@pytest.mark.parametrize("url", PAGES)
def test_admin_pages_render(admin_client, url):
    assert admin_client.get(url).status_code == 200


def test_adding_an_endpoint_in_admin_shows_the_secret_once_and_audits(admin_client, tenant):
    response = admin_client.post(
        "/admin/events/webhookendpoint/add/",
        {
            "tenant": tenant.pk,
            "url": "http://127.0.0.1:9/hook",
            "description": "",
            "event_types": '["order.*"]',
            "enabled": "on",
        },
        follow=True,
    )

    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(m.startswith("The signing secret is whsec_") for m in shown)
    assert AuditEntry.objects.filter(
        action="webhook_endpoint.created", target_id=str(endpoint.pk), actor_type="staff"
    ).exists()


def test_an_internal_url_is_refused_in_admin(admin_client, tenant, settings):
    settings.SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = False

    response = admin_client.post(
        "/admin/events/webhookendpoint/add/",
        {"tenant": tenant.pk, "url": "http://10.0.0.1/", "event_types": "[]", "enabled": "on"},
    )

    assert response.status_code == 200  # the form again, with the error
    assert "private address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_a_rule_added_in_admin_is_validated_and_audited(admin_client, tenant):
    response = admin_client.post(
        "/admin/events/rule/add/",
        {
            "tenant": tenant.pk,
            "name": "page",
            "event_type": "ticket.*",
            "condition": 'event.payload.priority == "high"',
            "actions": '[{"type": "task", "task": "signalbox.testing.count", "params": {"steps": "1"}}]',
            "enabled": "on",
        },
    )

    assert response.status_code == 302
    rule = Rule.objects.get()
    assert rule.actions == [{"type": "task", "task": "signalbox.testing.count", "params": {"steps": "1"}}]
    assert AuditEntry.objects.filter(action="rule.created", target_id=str(rule.pk)).exists()


def test_the_replay_action_requeues_a_dead_message(admin_client, tenant):
    from apps.events.models import Event

    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="http://127.0.0.1:9/", secret_encrypted="x")
    event = Event.objects.create(tenant=tenant, type="order.paid")
    message = WebhookMessage.objects.create(
        tenant=tenant, endpoint=endpoint, event=event, event_type=event.type, body="{}", status="failed"
    )

    admin_client.post("/admin/events/webhookmessage/", {"action": "replay", "_selected_action": [str(message.pk)]})

    message.refresh_from_db()
    assert message.status == "pending" and message.schedule_step == 0


def test_the_replay_action_is_audited_as_the_staff_member(admin_client, admin_user, tenant):
    from apps.events.models import Event

    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="http://127.0.0.1:9/", secret_encrypted="x")
    event = Event.objects.create(tenant=tenant, type="order.paid")
    message = WebhookMessage.objects.create(
        tenant=tenant, endpoint=endpoint, event=event, event_type=event.type, body="{}", status="failed"
    )

    admin_client.post("/admin/events/webhookmessage/", {"action": "replay", "_selected_action": [str(message.pk)]})

    entry = AuditEntry.objects.get(action="webhook_message.replayed", target_id=str(message.pk))
    assert (entry.tenant_id, entry.actor_type, entry.actor_id) == (tenant.pk, "staff", admin_user.get_username())


def _rule(tenant, name):
    from apps.events.services.rules import rule_create

    return rule_create(
        tenant=tenant, name=name, event_type="order.paid", actions=[{"type": "task", "task": "signalbox.testing.count"}]
    )


def _endpoint(tenant, path):
    from apps.events.services.webhooks import endpoint_create

    endpoint, _ = endpoint_create(tenant=tenant, url=f"http://127.0.0.1:9/{path}")
    return endpoint


def test_deleting_a_rule_in_admin_is_audited(admin_client, tenant):
    rule = _rule(tenant, "one")

    response = admin_client.post(f"/admin/events/rule/{rule.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302 and not Rule.objects.exists()
    entry = AuditEntry.objects.get(action="rule.deleted", target_id=str(rule.pk))
    assert (entry.tenant_id, entry.actor_type, entry.data) == (tenant.pk, "staff", {"name": "one"})


def test_deleting_rules_in_bulk_in_admin_audits_each(admin_client, tenant):
    rules = [_rule(tenant, "one"), _rule(tenant, "two")]

    admin_client.post(
        "/admin/events/rule/",
        {"action": "delete_selected", "post": "yes", "_selected_action": [str(r.pk) for r in rules]},
    )

    assert not Rule.objects.exists()
    deleted = AuditEntry.objects.filter(action="rule.deleted", actor_type="staff")
    assert sorted(deleted.values_list("target_id", flat=True)) == sorted(str(r.pk) for r in rules)


def test_deleting_an_endpoint_in_admin_is_audited(admin_client, tenant):
    endpoint = _endpoint(tenant, "one")

    response = admin_client.post(f"/admin/events/webhookendpoint/{endpoint.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302 and not WebhookEndpoint.objects.exists()
    entry = AuditEntry.objects.get(action="webhook_endpoint.deleted", target_id=str(endpoint.pk))
    assert (entry.tenant_id, entry.actor_type) == (tenant.pk, "staff")


def test_deleting_endpoints_in_bulk_in_admin_audits_each(admin_client, tenant):
    endpoints = [_endpoint(tenant, "one"), _endpoint(tenant, "two")]

    admin_client.post(
        "/admin/events/webhookendpoint/",
        {"action": "delete_selected", "post": "yes", "_selected_action": [str(e.pk) for e in endpoints]},
    )

    assert not WebhookEndpoint.objects.exists()
    deleted = AuditEntry.objects.filter(action="webhook_endpoint.deleted", actor_type="staff")
    assert sorted(deleted.values_list("target_id", flat=True)) == sorted(str(e.pk) for e in endpoints)
