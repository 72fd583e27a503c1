"""Flow definitions through the API: validation with field errors, the Mermaid diagram, tenant
isolation; and the permanent task names and the beat jobs."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core.periodic import periodic_jobs
from apps.flows import tasks
from apps.flows.models import FlowInstance
from apps.notifications.services.notifications import notification_create
from workers.routing import route_task

GOOD = {
    "key": "nudge",
    "steps": [
        {"id": "inbox", "type": "send", "channels": ["in_app"]},
        {"id": "later", "type": "delay", "duration": "30m"},
        {
            "id": "check",
            "type": "branch",
            "if": {"channel": "in_app", "state": ["read"]},
            "then": "end",
            "else": "mail",
        },
        {"id": "mail", "type": "fallback", "channels": ["email", "sms"]},
        {"id": "end", "type": "exit"},
    ],
}


def refused(api: Any, document: dict[str, Any], status: int = 400) -> dict[str, Any]:
    """The field errors of a refusal: 400 a document that breaks the schema, 422 a rule it cannot express."""
    answer = api.post("/api/v1/flows/", document, format="json")
    assert answer.status_code == status, answer.json()
    body = answer.json()
    assert body["code"] == "validation_error"
    return body["fields"]


@pytest.mark.django_db
def test_an_unknown_channel_an_unreachable_step_and_a_loop_are_refused_with_field_errors(api: Any):
    steps = [{"id": "a", "type": "send", "channels": ["pigeon"]}]
    assert "pigeon" in refused(api, {"key": "x", "steps": steps})["steps[0].channels"][0]

    unreachable = [
        {"id": "a", "type": "send", "channels": ["email"]},
        {"id": "b", "type": "exit"},
        {"id": "c", "type": "exit"},
    ]
    assert "unreachable" in refused(api, {"key": "x", "steps": unreachable}, 422)["steps[2]"][0]

    loop = [
        {"id": "a", "type": "send", "channels": ["email"]},
        {"id": "b", "type": "delay", "duration": "1h", "next": "a"},
    ]
    assert "loop" in refused(api, {"key": "x", "steps": loop}, 422)["steps[1].next"][0]

    twice = [{"id": "a", "type": "send", "channels": ["email"]}, {"id": "b", "type": "send", "channels": ["email"]}]
    assert "already sent" in refused(api, {"key": "x", "steps": twice}, 422)["steps[1].channels"][0]

    bad_cel = [{"id": "a", "type": "branch", "if": {"cel": "order.total >"}, "then": "b"}, {"id": "b", "type": "exit"}]
    assert "steps[0].if.cel" in refused(api, {"key": "x", "steps": bad_cel}, 422)
    assert api.get("/api/v1/flows/").json()["results"] == []  # nothing was saved


@pytest.mark.django_db
def test_a_malformed_step_is_400_and_a_well_formed_one_broken_by_a_rule_is_422(api: Any):
    """The schema gives each step type its fields (400 when broken); what it cannot say is 422."""
    send = {"id": "a", "type": "send", "channels": ["email"]}
    assert "steps[0].channels" in refused(api, {"key": "x", "steps": [{"id": "a", "type": "send"}]})
    assert "steps[1].until" in refused(api, {"key": "x", "steps": [send, {"id": "b", "type": "delay", "until": "9am"}]})
    assert "steps[0].next" in refused(api, {"key": "x", "steps": [{**send, "next": ""}]})
    assert "No step 'zz'" in refused(api, {"key": "x", "steps": [{**send, "next": "zz"}]}, 422)["steps[0].next"][0]
    both = {"id": "b", "type": "delay", "duration": "1h", "until": "09:00"}
    assert "steps[1]" in refused(api, {"key": "x", "steps": [send, both]}, 422)
    assert (
        "used twice" in refused(api, {"key": "x", "steps": [send, {"id": "a", "type": "exit"}]}, 422)["steps[1].id"][0]
    )
    assert "template" in refused(api, {"key": "x", "template": "nope", "steps": [send]}, 422)
    assert api.get("/api/v1/flows/").json()["results"] == []  # nothing was saved


@pytest.mark.django_db
def test_a_flow_is_saved_as_versions_and_drawn_as_mermaid(api: Any):
    created = api.post("/api/v1/flows/", GOOD, format="json")
    assert created.status_code == 201 and created.json()["version"] == 1
    assert api.post("/api/v1/flows/", GOOD, format="json").status_code == 200  # unchanged: no new version
    steps = [s["id"] for s in created.json()["steps"]]
    assert steps == ["inbox", "later", "check", "mail", "mail.email-failed", "mail.sms", "end"]  # fallback expanded

    diagram = api.get("/api/v1/flows/nudge/diagram/")
    assert diagram.status_code == 200
    mermaid = diagram.json()["mermaid"]
    assert mermaid.startswith("flowchart TD")
    assert "if in_app is read" in mermaid and "-->|yes|" in mermaid and "send email" in mermaid


@pytest.mark.django_db
def test_another_tenant_cannot_read_a_flow_or_its_runs(
    api: Any, other_api: Any, tenant: Any, make_template: Any, make_recipients: Any
):
    make_template()
    make_recipients(1)
    assert api.post("/api/v1/flows/", {**GOOD, "template": "order_shipped"}, format="json").status_code == 201
    notification = notification_create(tenant=tenant, flow="nudge", payload={"order_id": "A-1"}, recipients=["user-0"])
    assert FlowInstance.objects.filter(pk=notification.pk).exists()

    assert api.get(f"/api/v1/notifications/{notification.pk}/flow-runs/").status_code == 200
    assert other_api.get("/api/v1/flows/nudge/").status_code == 404
    assert other_api.get("/api/v1/flows/nudge/diagram/").status_code == 404
    assert other_api.get(f"/api/v1/notifications/{notification.pk}/flow-runs/").status_code == 404
    assert other_api.get(f"/api/v1/notifications/{notification.pk}/flow/").status_code == 404
    assert other_api.get("/api/v1/flows/").json()["results"] == []


@pytest.mark.django_db
def test_a_notification_naming_an_unknown_flow_or_channels_is_refused(
    api: Any, make_template: Any, make_recipients: Any
):
    make_template()
    make_recipients(1)
    answer = api.post(
        "/api/v1/notifications/", {"flow": "nope", "template": "order_shipped", "recipients": ["user-0"]}, format="json"
    )
    assert answer.status_code == 400 and "flow" in answer.json()["fields"]
    api.post("/api/v1/flows/", {**GOOD, "template": "order_shipped"}, format="json")
    answer = api.post(
        "/api/v1/notifications/",
        {"flow": "nudge", "channels": ["email"], "payload": {"order_id": "A-1"}, "recipients": ["user-0"]},
        format="json",
    )
    assert answer.status_code == 400 and "channels" in answer.json()["fields"]


def test_task_names_queues_and_beat_jobs_are_permanent():
    assert (tasks.advance.name, tasks.advance.queue) == ("signalbox.flows.advance", "notifications.default")  # type: ignore[attr-defined]
    assert (tasks.dispatch_due.name, tasks.dispatch_due.queue) == ("signalbox.flows.dispatch_due", "maintenance")  # type: ignore[attr-defined]
    assert (tasks.sweep.name, tasks.sweep.queue) == ("signalbox.flows.sweep", "maintenance")  # type: ignore[attr-defined]
    assert route_task("signalbox.flows.advance", (), {}, {}) == {"queue": "notifications.default"}
    jobs = {job.task: job.every_seconds for job in periodic_jobs()}
    assert jobs["signalbox.flows.dispatch_due"] == 5 and jobs["signalbox.flows.sweep"] == 30
