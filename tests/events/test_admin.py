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
