"""A transition's effects: a notification, events that reach webhooks, a tracked task, all or nothing."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from apps.events.models import Event, WebhookMessage
from apps.notifications.models import Notification
from apps.tasks.models import TaskExecution
from apps.workflows.models import WorkflowInstance
from tests.conftest import wait_for
from tests.events.conftest import notification_settled, register_endpoint
from tests.workflows.conftest import start_order, transition

pytestmark = pytest.mark.worker


def test_approving_an_order_notifies_the_customer_and_signs_webhooks(worker, api, manager, order_workflow, receiver):
    endpoint = register_endpoint(api, receiver.url(), event_types=["order.*", "transition.applied"])
    start_order(api, "E-1", total=250, customer_id="cust-1")
    transition(api, "E-1", "submit", wait=True)

    response = transition(manager, "E-1", "approve", payload={"note": "ok"})
    task = wait_for(lambda: (t := api.get(response.json()["poll_url"]).json())["status"] == "succeeded" and t)

    assert task["result"]["to"] == "approved"
    notification = notification_settled(Notification.objects.get(metadata__source__kind="workflow").pk)
    assert notification.template.key == "order-approved"
    assert notification.payload == {"order": "E-1", "total": 250}
    assert notification.metadata["source"]["transition"] == "approve"
    wait_for(lambda: WebhookMessage.objects.filter(endpoint_id=endpoint["id"], status="delivered").count() == 4)
    received = [Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in receiver.requests]
    kinds = sorted((m["type"], m["data"].get("transition")) for m in received)
    assert kinds == [
        ("order.approved", "approve"),
        ("order.submitted", "submit"),
        ("transition.applied", "approve"),
        ("transition.applied", "submit"),
    ]
    [approved] = [m for m in received if m["type"] == "order.approved"]
    assert approved["subject"] == {"type": "order", "id": "E-1"}
    assert approved["data"]["from"] == "submitted" and approved["data"]["to"] == "approved"
    assert approved["data"]["data"]["approved_by"] == manager.api_key.partition(".")[0]


def test_an_effect_that_cannot_be_recorded_refuses_the_whole_transition(worker, api, manager, order_workflow):
    start_order(api, "E-2", total=10, customer_id="nobody-we-know")
    transition(api, "E-2", "submit", wait=True)

    response = transition(manager, "E-2", "approve", wait=True)

    assert (response.status_code, response.json()["code"]) == (422, "effect_failed")
    assert "Unknown recipient(s): nobody-we-know" in response.json()["message"]
    instance = WorkflowInstance.objects.get(subject_id="E-2")
    assert (instance.state, instance.version) == ("submitted", 2)
    assert not Event.objects.filter(type="order.approved").exists()
    assert not Notification.objects.exists()


def test_a_task_effect_starts_a_tracked_task(worker, api):
    document = {
        "key": "export",
        "states": ["requested", "running"],
        "initial": "requested",
        "finals": ["running"],
        "transitions": [
            {
                "name": "start",
                "from": "requested",
                "to": "running",
                "effects": [{"type": "task", "task": "signalbox.testing.count", "params": {"steps": "payload.rows"}}],
            }
        ],
    }
    assert api.post("/api/v1/workflows/", document, format="json").status_code == 201
    api.post("/api/v1/workflows/export/instances/", {"subject_id": "X-1"}, format="json")

    response = api.post(
        "/api/v1/workflows/export/instances/X-1/transitions/",
        {"transition": "start", "payload": {"rows": 3}},
        format="json",
    )
    assert response.status_code == 202

    execution = wait_for(
        lambda: TaskExecution.objects.filter(name="signalbox.testing.count", status="succeeded").first()
    )
    assert execution.input["steps"] == 3
    assert (execution.actor_type, execution.actor_id) == ("system", "workflow:export")
    assert json.loads(json.dumps(execution.result))["counted"] == 3
