"""Rules on the real `events` queue: matching, conditions, actions, and the observer log."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from apps.events.admin import RuleForm
from apps.events.models import RuleExecution, WebhookMessage
from apps.notifications.models import Notification, Recipient
from apps.observability.models import AuditEntry
from apps.tasks.models import TaskExecution
from tests.conftest import wait_for
from tests.events.conftest import notification_settled, record_event, register_endpoint
from tests.workflows.conftest import ORDER_YAML

TICKET_TEMPLATE = {
    "variables": ["ticket"],
    "default_channels": ["in_app"],
    "content": {"default": {"in_app": {"title": "Ticket {{ ticket }}", "body": "Assigned to you."}}},
}


@pytest.fixture
def ticket_setup(tenant: Any) -> None:
    from apps.notifications.services.recipients import recipient_create
    from apps.notifications.services.templates import template_create

    template_create(tenant=tenant, key="ticket-assigned", definition=TICKET_TEMPLATE)
    for external_id in ("agent-7", "agent-8"):
        recipient_create(tenant=tenant, data={"external_id": external_id})


def create_rule(client: Any, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/rules/", {"name": "rule", **fields}, format="json")
    assert response.status_code == 201, response.json()
    return dict(response.json())


def executions(rule: dict[str, Any], count: int = 1) -> list[RuleExecution]:
    return wait_for(
        lambda: (
            (found := list(RuleExecution.objects.filter(rule_id=rule["id"]).order_by("created_at")))
            and len(found) >= count
            and found
        ),
        message=f"{count} execution(s) of {rule['name']}",
    )


NOTIFY_ASSIGNEE = {
    "type": "notification",
    "template": "ticket-assigned",
    "recipients": ["event.payload.assignee"],
    "data": {"ticket": "event.subject.id"},
}


@pytest.mark.worker
def test_a_matching_rule_sends_a_notification_to_recipients_named_in_the_payload(worker, api, ticket_setup):
    rule = create_rule(
        api, event_type="ticket.*", condition='event.payload.priority == "high"', actions=[NOTIFY_ASSIGNEE]
    )

    record_event(api, "ticket.assigned", "T-9", assignee="agent-7", priority="high")

    [execution] = executions(rule)
    assert execution.outcome == "succeeded"
    [action] = execution.actions
    assert action["type"] == "notification" and action["status"] == "done"
    notification = notification_settled(action["ref"])
    assert notification.template.key == "ticket-assigned"
    assert notification.payload == {"ticket": "T-9"}
    assert notification.metadata["source"]["rule_id"] == rule["id"]
    logged = api.get(f"/api/v1/rules/{rule['id']}/executions/").json()["results"]
    assert [e["outcome"] for e in logged] == ["succeeded"]


@pytest.mark.worker
def test_a_false_condition_is_logged_as_skipped_and_other_types_do_not_match(worker, api, ticket_setup):
    rule = create_rule(
        api, event_type="ticket.*", condition='event.payload.priority == "high"', actions=[NOTIFY_ASSIGNEE]
    )

    record_event(api, "ticket.assigned", "T-1", assignee="agent-7", priority="low")
    record_event(api, "invoice.paid", "I-1")

    [execution] = executions(rule)
    assert execution.outcome == "skipped" and execution.actions == []
    wait_for(lambda: not api.get("/api/v1/events/?status=pending").json()["results"])
    assert RuleExecution.objects.count() == 1
    assert not Notification.objects.exists()


@pytest.mark.worker
def test_a_failing_action_is_logged_and_the_others_still_run(worker, api, ticket_setup, receiver):
    endpoint = register_endpoint(api, receiver.url(), event_types=["nothing.here"])
    rule = create_rule(
        api,
        event_type="ticket.assigned",
        actions=[
            {**NOTIFY_ASSIGNEE, "recipients": ["event.payload.nobody"]},  # no such field
            {"type": "webhook", "endpoint_id": endpoint["id"]},  # called although not subscribed
            {"type": "task", "task": "signalbox.testing.count", "params": {"steps": "size(event.payload.items)"}},
        ],
    )

    record_event(api, "ticket.assigned", "T-2", items=[1, 2, 3])

    [execution] = executions(rule)
    assert execution.outcome == "failed"
    failed, webhook, task = execution.actions
    assert (failed["status"], failed["code"]) == ("failed", "cel_error")
    assert "no field 'nobody'" in failed["error"]
    assert webhook["status"] == "done" and task["status"] == "done"
    wait_for(lambda: WebhookMessage.objects.filter(pk=webhook["ref"], status="delivered").exists())
    execution_row = wait_for(lambda: TaskExecution.objects.filter(pk=task["ref"], status="succeeded").first())
    assert execution_row.input == {"steps": 3, "delay": 0.0}


@pytest.mark.worker
def test_signalbox_events_fire_rules_too(worker, api, ticket_setup):
    """transition.applied comes from event_emit, through the same bus as clients' events."""
    api.post("/api/v1/workflows/", yaml.safe_load(ORDER_YAML.read_text()), format="json")
    rule = create_rule(
        api,
        event_type="transition.applied",
        condition='event.payload.to == "rejected"',
        actions=[{**NOTIFY_ASSIGNEE, "recipients": ["event.payload.payload.escalate_to"]}],
    )
    api.post("/api/v1/workflows/order/instances/", {"subject_id": "O-1", "data": {"total": 5}}, format="json")

    response = api.post(
        "/api/v1/workflows/order/instances/O-1/transitions/?wait=true",
        {"transition": "cancel", "payload": {"escalate_to": "agent-8"}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    [execution] = executions(rule)
    assert execution.outcome == "succeeded"
    assert execution.event.source == "signalbox" and execution.event.subject == {"type": "order", "id": "O-1"}
    assert notification_settled(execution.actions[0]["ref"]).payload == {"ticket": "O-1"}


@pytest.mark.worker
def test_watchers_of_the_subject_are_notified(worker, api, ticket_setup):
    for recipient in ("agent-7", "agent-8"):
        added = api.post(
            "/api/v1/watchers/", {"subject": {"type": "ticket", "id": "T-5"}, "recipient": recipient}, format="json"
        )
        assert added.status_code == 201, added.json()
    rule = create_rule(
        api, event_type="ticket.closed", actions=[{**NOTIFY_ASSIGNEE, "recipients": [], "watchers": True}]
    )

    record_event(api, "ticket.closed", "T-5")
    record_event(api, "ticket.closed", "T-6")  # nobody watches T-6: nothing to send, and no failure

    first, second = executions(rule, count=2)
    by_subject = {e.event.subject_id: e for e in (first, second)}
    notification = notification_settled(by_subject["T-5"].actions[0]["ref"])
    assert sorted(notification.recipient_ids or []) == sorted(
        Recipient.objects.filter(external_id__in=["agent-7", "agent-8"]).values_list("pk", flat=True)
    )
    assert by_subject["T-6"].outcome == "succeeded"
    assert by_subject["T-6"].actions == [
        {"type": "notification", "status": "skipped", "reason": "The subject has no watchers."}
    ]


def test_watchers_are_listed_by_subject_and_scoped_to_the_tenant(db, api, other_api):
    added = api.post(
        "/api/v1/watchers/", {"subject": {"type": "order", "id": "9"}, "recipient": "cust-1"}, format="json"
    ).json()
    duplicate = api.post(
        "/api/v1/watchers/", {"subject": {"type": "order", "id": "9"}, "recipient": "cust-1"}, format="json"
    )

    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "watcher_exists")
    listed = api.get("/api/v1/watchers/?subject_type=order&subject_id=9").json()["results"]
    assert [(w["subject"], w["recipient"]) for w in listed] == [({"type": "order", "id": "9"}, "cust-1")]
    assert other_api.get("/api/v1/watchers/").json()["results"] == []
    assert other_api.delete(f"/api/v1/watchers/{added['id']}/").status_code == 404
    assert api.delete(f"/api/v1/watchers/{added['id']}/").status_code == 204


def test_rules_are_validated_before_they_are_stored(db, api):
    bad = api.post(
        "/api/v1/rules/",
        {
            "name": "bad",
            "event_type": "order.**",
            "condition": "event.payload.x ==",
            "actions": [{"type": "webhook", "endpoint_id": "00000000-0000-0000-0000-000000000000"}, {"type": "sms"}],
        },
        format="json",
    )

    assert bad.status_code == 422 and bad.json()["code"] == "invalid_rule"
    assert set(bad.json()["fields"]) == {"event_type", "condition", "actions[0].endpoint_id", "actions[1]"}


@pytest.mark.parametrize(
    "audience",
    [{"recipients": ["event.payload.assignee"]}, {"watchers": True}],
    ids=["recipients", "watchers"],
)
def test_a_topic_with_recipients_or_watchers_is_refused_not_half_sent(db, api, tenant, audience):
    action = {"type": "notification", "template": "ticket-assigned", "topic": "ops", **audience}

    refused = api.post("/api/v1/rules/", {"name": "both", "event_type": "ticket.*", "actions": [action]}, format="json")
    form = RuleForm(
        data={"tenant": tenant.pk, "name": "both", "event_type": "ticket.*", "actions": json.dumps([action])}
    )

    assert refused.status_code == 422 and refused.json()["code"] == "invalid_rule"
    assert "cannot have both" in refused.json()["fields"]["actions[0].topic"][0]
    assert not form.is_valid() and "cannot have both" in str(form.errors)
    topic_only = {"type": "notification", "template": "ticket-assigned", "topic": "ops"}
    create_rule(api, event_type="ticket.*", actions=[topic_only])


def test_sending_to_a_topic_and_recipients_at_once_is_refused(db, tenant):
    """A rule stored before validation refused the pair fails loudly instead of dropping the recipients."""
    from apps.events.actions import ActionFailed, send_notification

    with pytest.raises(ActionFailed) as refused:
        send_notification(
            tenant=tenant,
            template="ticket-assigned",
            recipients=["agent-7"],
            topic="ops",
            data={},
            idempotency_key="k",
            source={},
        )

    assert refused.value.code == "audience_conflict"
    assert not Notification.objects.exists()


def test_rules_need_events_write_and_changes_are_audited(db, api, tenant):
    from tests.conftest import client_for

    assert client_for(tenant, ["read"]).post("/api/v1/rules/", {}, format="json").status_code == 403
    rule = create_rule(api, event_type="order.paid", actions=[{"type": "task", "task": "signalbox.testing.count"}])
    patched = api.patch(f"/api/v1/rules/{rule['id']}/", {"enabled": False}, format="json")
    deleted = api.delete(f"/api/v1/rules/{rule['id']}/")

    assert patched.json()["enabled"] is False and deleted.status_code == 204
    actions = list(
        AuditEntry.objects.filter(target_id=rule["id"]).order_by("created_at").values_list("action", flat=True)
    )
    assert actions == ["rule.created", "rule.updated", "rule.deleted"]


def test_another_tenants_rules_are_invisible(db, api, other_api):
    rule = create_rule(api, event_type="order.paid", actions=[{"type": "task", "task": "signalbox.testing.count"}])

    assert other_api.get(f"/api/v1/rules/{rule['id']}/").status_code == 404
    assert other_api.delete(f"/api/v1/rules/{rule['id']}/").status_code == 404
    assert other_api.get("/api/v1/rules/").json()["results"] == []


def test_the_admin_form_refuses_bad_cel(db, tenant):
    form = RuleForm(
        data={
            "tenant": tenant.pk,
            "name": "r",
            "event_type": "order.paid",
            "condition": "nope(",
            "actions": '[{"type": "task", "task": "x"}]',
        }
    )

    assert not form.is_valid()
    assert "condition" in str(form.errors)


@pytest.mark.worker
def test_a_tracked_tasks_outcome_is_a_platform_event_that_fires_rules(worker, api, ticket_setup):
    rule = create_rule(
        api,
        event_type="task.*",
        actions=[{**NOTIFY_ASSIGNEE, "recipients": ['"agent-7"'], "data": {"ticket": "event.payload.name"}}],
    )

    response = api.post("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 3}}, format="json")

    assert response.status_code == 202, response.json()
    [execution] = executions(rule)
    assert execution.event.type == "task.succeeded"
    assert execution.event.source == "signalbox"
    assert execution.event.subject == {"type": "task", "id": response.json()["id"]}
    assert execution.outcome == "succeeded", execution.actions


def loop_guarded(rule: dict[str, Any]) -> RuleExecution:
    return wait_for(
        lambda: RuleExecution.objects.filter(rule_id=rule["id"], error__startswith="Loop guard").first(),
        timeout=30,
        message="the loop guard to stop the rule",
    )


@pytest.mark.worker
def test_a_rule_that_feeds_itself_through_notifications_is_stopped_by_the_loop_guard(worker, api, ticket_setup):
    rule = create_rule(
        api,
        event_type="delivery.delivered",
        actions=[{**NOTIFY_ASSIGNEE, "recipients": ['"agent-7"'], "data": {"ticket": "event.payload.recipient"}}],
    )

    response = api.post(
        "/api/v1/notifications/",
        {"template": "ticket-assigned", "recipients": ["agent-7"], "payload": {"ticket": "T-1"}},
        format="json",
    )
    assert response.status_code == 202, response.json()

    stopped = loop_guarded(rule)
    assert stopped.outcome == "skipped" and stopped.event.depth == 3
    # The client's notification, then one per rule action at depths 1, 2 and 3: no fifth.
    wait_for(lambda: not Notification.objects.exclude(status="completed").exists())
    depths = sorted((n.metadata.get("source") or {}).get("depth", 0) for n in Notification.objects.all())
    assert depths == [0, 1, 2, 3]
    assert [e.outcome for e in RuleExecution.objects.filter(rule_id=rule["id"]).order_by("created_at")] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "skipped",
    ]


@pytest.mark.worker
def test_a_rule_that_restarts_tasks_on_their_success_is_stopped_by_the_loop_guard(worker, api, ticket_setup):
    rule = create_rule(
        api,
        event_type="task.succeeded",
        actions=[{"type": "task", "task": "signalbox.testing.count", "params": {"steps": "1"}}],
    )

    response = api.post("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 1}}, format="json")
    assert response.status_code == 202, response.json()

    stopped = loop_guarded(rule)
    assert stopped.event.type == "task.succeeded" and stopped.event.depth == 3
    assert api.get(f"/api/v1/events/{stopped.event_id}/").json()["depth"] == 3
    wait_for(lambda: TaskExecution.objects.filter(status="succeeded").count() == 4)
    assert TaskExecution.objects.count() == 4  # the client's task and three started by the rule
