"""Workflow definitions: loaded from YAML, versioned on change, validated before anything is stored."""

from __future__ import annotations

import copy
from io import StringIO
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from apps.workflows.admin import WorkflowDefinitionForm
from apps.workflows.models import WorkflowDefinition
from tests.conftest import client_for
from tests.workflows.conftest import ORDER_YAML, start_order

pytestmark = pytest.mark.django_db

SMALL: dict[str, Any] = {
    "key": "ticket",
    "states": ["open", "closed"],
    "initial": "open",
    "finals": ["closed"],
    "transitions": [{"name": "close", "from": "open", "to": "closed"}],
}


def test_loadworkflow_stores_the_yaml_definition_and_reloading_it_changes_nothing(tenant):
    out = StringIO()
    call_command("loadworkflow", str(ORDER_YAML), tenant=tenant.slug, stdout=out)
    call_command("loadworkflow", str(ORDER_YAML), tenant=tenant.slug, stdout=out)

    [definition] = WorkflowDefinition.objects.filter(tenant=tenant, key="order")
    assert definition.version == 1
    assert definition.spec["initial"] == "draft"
    assert definition.spec["finals"] == ["rejected", "shipped"]
    assert [t["name"] for t in definition.spec["transitions"]] == ["submit", "approve", "reject", "ship", "cancel"]
    assert "order loaded as version 1" in out.getvalue()
    assert "order unchanged at version 1" in out.getvalue()


def test_loadworkflow_refuses_an_invalid_file_and_says_where(tenant, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**SMALL, "transitions": [{"name": "close", "from": "open", "to": "gone"}]}))

    with pytest.raises(CommandError, match=r"transitions\[0\]\.to: Unknown target state 'gone'"):
        call_command("loadworkflow", str(broken), tenant=tenant.slug)
    assert not WorkflowDefinition.objects.exists()


def test_a_changed_definition_is_a_new_version_and_instances_keep_theirs(api, order_workflow):
    start_order(api, "A-1", total=10)
    changed = copy.deepcopy(order_workflow.spec)
    changed["states"].append({"name": "archived", "description": ""})
    changed["finals"].append("archived")
    changed["transitions"].append({"name": "archive", "from": ["approved"], "to": "archived"})

    response = api.post("/api/v1/workflows/", changed, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["version"] == 2
    old = api.get("/api/v1/workflows/order/instances/A-1/").json()
    assert old["workflow"] == {"key": "order", "version": 1}
    assert "archive" not in [t["name"] for t in api.get("/api/v1/workflows/order/?version=1").json()["transitions"]]
    assert start_order(api, "A-2")["workflow"] == {"key": "order", "version": 2}
    versions = api.get("/api/v1/workflows/order/versions/").json()["results"]
    assert [v["version"] for v in versions] == [2, 1]


def test_posting_the_same_document_again_answers_200_with_the_same_version(api):
    first = api.post("/api/v1/workflows/", SMALL, format="json")
    again = api.post("/api/v1/workflows/", SMALL, format="json")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"states": ["open", "closed", "limbo"]}, "states", "'limbo' cannot be reached"),
        ({"transitions": [{"name": "close", "from": "open", "to": "nowhere"}]}, "transitions[0].to", "Unknown target"),
        (
            {"transitions": [{"name": "close", "from": "open", "to": "closed"}] * 2},
            "transitions[1].name",
            "Duplicate transition name",
        ),
        (
            {"transitions": [{"name": "close", "from": "open", "to": "closed", "guard": {"conditions": ["data.x >"]}}]},
            "transitions[0].guard.conditions[0].expression",
            "Invalid CEL",
        ),
        (
            {
                "transitions": [
                    {"name": "close", "from": "open", "to": "closed", "guard": {"conditions": ["secret == 1"]}}
                ]
            },
            "transitions[0].guard.conditions[0].expression",
            "Unknown variable(s) secret",
        ),
        (
            {"transitions": [{"name": "close", "from": "open", "to": "closed", "guard": {"scopes": ["root"]}}]},
            "transitions[0].guard.scopes",
            "Unknown scope 'root'",
        ),
        (
            {"transitions": [{"name": "close", "from": "open", "to": "closed", "payload_schema": {"type": 12}}]},
            "transitions[0].payload_schema",
            "Not a valid JSON Schema",
        ),
        ({"initial": "closed"}, "finals", "initial state cannot be final"),
        (
            {
                "transitions": [
                    {
                        "name": "close",
                        "from": "open",
                        "to": "closed",
                        "effects": [
                            {"type": "notification", "template": "t", "topic": "staff", "recipients": ["data.owner"]}
                        ],
                    }
                ]
            },
            "transitions[0].effects[0].topic",
            "not both",
        ),
    ],
)
def test_an_invalid_definition_is_refused_with_the_problem_located(api, change, where, message):
    response = api.post("/api/v1/workflows/", {**SMALL, **change}, format="json")

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_workflow"
    assert any(message in m for m in body["fields"][where]), body["fields"]
    assert not WorkflowDefinition.objects.exists()


def test_definitions_need_the_transitions_scope_to_write_and_read_to_list(tenant):
    reader = client_for(tenant, ["read"])

    assert reader.post("/api/v1/workflows/", SMALL, format="json").status_code == 403
    assert reader.get("/api/v1/workflows/").status_code == 200


def test_list_shows_the_latest_version_of_each_workflow(api, order_workflow):
    api.post("/api/v1/workflows/", SMALL, format="json")
    api.post("/api/v1/workflows/", {**SMALL, "name": "Tickets"}, format="json")

    listed = api.get("/api/v1/workflows/").json()["results"]

    assert [(d["key"], d["version"]) for d in listed] == [("order", 1), ("ticket", 2)]


def test_another_tenants_workflows_are_invisible(api, other_api, order_workflow):
    assert other_api.get("/api/v1/workflows/").json()["results"] == []
    assert other_api.get("/api/v1/workflows/order/").status_code == 404
    assert other_api.get("/api/v1/workflows/order/diagram/").status_code == 404
    response = other_api.post("/api/v1/workflows/order/instances/", {"subject_id": "1"}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "workflow_not_found"


def test_diagram_gives_mermaid_and_dot_and_marks_an_instances_state(api, order_workflow):
    start_order(api, "D-1", total=5)

    plain = api.get("/api/v1/workflows/order/diagram/").json()
    marked = api.get("/api/v1/workflows/order/instances/D-1/diagram/").json()

    assert plain["mermaid"].startswith("stateDiagram-v2\n    [*] --> draft\n")
    assert "    submitted --> approved: approve\n" in plain["mermaid"]
    assert "    approved --> rejected: cancel\n" in plain["mermaid"]  # "*" drawn from every non-final state
    assert "    shipped --> [*]\n" in plain["mermaid"]
    assert plain["current_state"] is None and "class " not in plain["mermaid"]
    assert '"submitted" -> "approved" [label="approve"];' in plain["dot"]
    assert '"shipped" [peripheries=2];' in plain["dot"]
    assert marked["current_state"] == "draft"
    assert "    class draft current\n" in marked["mermaid"]
    assert '"draft" [style="rounded,filled"' in marked["dot"]


def test_admin_form_refuses_bad_cel_and_saving_creates_a_new_version(admin_client, tenant, order_workflow):
    bad = yaml.safe_dump(
        {**SMALL, "transitions": [{**SMALL["transitions"][0], "guard": {"conditions": ["data.x =="]}}]}
    )
    form = WorkflowDefinitionForm(data={"tenant": tenant.pk, "document": bad})
    assert not form.is_valid()
    assert "Invalid CEL" in str(form.errors["document"])

    url = f"/admin/workflows/workflowdefinition/{order_workflow.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    document: Any = yaml.safe_load(page.context["adminform"].form["document"].value())
    document["description"] = "Edited in admin."
    response = admin_client.post(url, {"tenant": tenant.pk, "document": yaml.safe_dump(document)})

    assert response.status_code == 302
    latest = WorkflowDefinition.objects.filter(key="order").order_by("-version")[0]
    assert (latest.version, latest.description) == (2, "Edited in admin.")
    assert (
        WorkflowDefinition.objects.get(pk=order_workflow.pk).description == "A customer order, from draft to shipped."
    )


def test_the_diagram_in_the_docs_is_the_one_the_api_draws(api, order_workflow):
    docs = (ORDER_YAML.parent.parent / "workflows.md").read_text()
    drawn = api.get("/api/v1/workflows/order/diagram/").json()["mermaid"]

    assert f"```mermaid\n{drawn}```" in docs
