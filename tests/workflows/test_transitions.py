"""Transition intents through the real `transitions` worker: applied, guarded, refused, raced."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F

from apps.core.actors import Actor
from apps.workflows.models import TransitionIntent, TransitionLog, WorkflowInstance
from apps.workflows.services.transitions import intent_create
from apps.workflows.tasks import apply_transition
from tests.conftest import wait_for
from tests.workflows.conftest import start_order, transition

pytestmark = pytest.mark.worker


def finished_task(client: Any, response: Any) -> dict[str, Any]:
    """Polls the task the 202 answer points at until it has finished."""
    assert response.status_code == 202, response.json()
    url = response.json()["poll_url"]
    assert url.startswith("/api/v1/tasks/")
    return wait_for(
        lambda: (body := client.get(url).json())["status"] in ("succeeded", "failed") and body,
        message=f"{url} to finish",
    )


def test_an_intent_is_applied_by_the_worker_and_its_task_succeeds(worker, api, order_workflow):
    start_order(api, "O-1", total=120, customer_id="cust-1")

    response = transition(api, "O-1", "submit")
    assert response["Location"] == response.json()["poll_url"]
    task = finished_task(api, response)

    assert task["status"] == "succeeded", task
    assert task["result"]["from"] == "draft" and task["result"]["to"] == "submitted"
    instance = api.get("/api/v1/workflows/order/instances/O-1/").json()
    assert instance["state"] == "submitted"
    assert instance["version"] == 2
    assert instance["data"]["submitted_by"] == api.api_key.partition(".")[0]  # set: {submitted_by: actor.id}
    intent = api.get(f"/api/v1/transition-intents/{response.json()['id']}/").json()
    assert intent["status"] == "applied" and intent["error"] is None


def test_history_lists_creation_and_every_transition_with_actor_and_payload(worker, api, manager, order_workflow):
    start_order(api, "O-2", total=10)
    transition(api, "O-2", "submit", wait=True)
    transition(manager, "O-2", "approve", wait=True, payload={"note": "fine"})

    history = api.get("/api/v1/workflows/order/instances/O-2/history/").json()["results"]

    assert [(h["kind"], h["transition"], h["from_state"], h["to"]) for h in history] == [
        ("created", "", "", "draft"),
        ("transition", "submit", "draft", "submitted"),
        ("transition", "approve", "submitted", "approved"),
    ]
    assert history[2]["payload"] == {"note": "fine"}
    assert history[2]["actor"]["id"] == manager.api_key.partition(".")[0]
    assert [h["instance_version"] for h in history] == [1, 2, 3]


def test_wait_true_applies_in_the_request_with_the_same_code_path(worker, api, order_workflow):
    start_order(api, "O-3", total=10)

    response = transition(api, "O-3", "submit", wait=True)

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "applied"
    assert response.json()["instance"]["state"] == "submitted"
    assert api.get(response.json()["poll_url"]).json()["status"] == "succeeded"


def test_available_transitions_depend_on_the_callers_scopes_and_the_data(worker, api, clerk, manager, order_workflow):
    start_order(api, "O-4", total=0)
    draft = api.get("/api/v1/workflows/order/instances/O-4/").json()
    assert [t["name"] for t in draft["available_transitions"]] == ["cancel"]  # submit: total is 0
    assert draft["unavailable_transitions"][0]["reason"]["code"] == "guard_failed"

    start_order(api, "O-5", total=20_000)
    transition(api, "O-5", "submit", wait=True)
    for_clerk = clerk.get("/api/v1/workflows/order/instances/O-5/").json()
    for_manager = manager.get("/api/v1/workflows/order/instances/O-5/").json()

    assert [t["name"] for t in for_clerk["available_transitions"]] == ["reject", "cancel"]
    assert for_clerk["unavailable_transitions"] == [
        {
            "name": "approve",
            "to": "approved",
            "reason": {"code": "transition_forbidden", "message": "'approve' needs the scope(s) admin."},
        }
    ]
    [approve] = [t for t in for_manager["available_transitions"] if t["name"] == "approve"]
    # Over 10,000 the guard reads payload.override, so it can only be decided when applied.
    assert approve["checked_on_apply"] == ['Orders of 10,000 or more need "override": true in the payload.']
    assert approve["payload_schema"]["properties"]["override"] == {"type": "boolean"}


def test_a_scope_guard_refuses_at_once_with_403(worker, api, clerk, order_workflow):
    start_order(api, "O-6", total=10)
    transition(api, "O-6", "submit", wait=True)

    response = transition(clerk, "O-6", "approve")

    assert response.status_code == 403
    assert response.json()["code"] == "transition_forbidden"
    assert not TransitionIntent.objects.filter(transition="approve").exists()


def test_a_cel_guard_refusal_ends_the_task_failed_with_guard_failed(worker, api, manager, order_workflow):
    start_order(api, "O-7", total=0)

    task = finished_task(api, transition(api, "O-7", "submit"))

    assert task["status"] == "failed"
    assert task["error"] == {
        "code": "guard_failed",
        "message": "An order needs a total above zero before it is submitted.",
    }
    assert api.get("/api/v1/workflows/order/instances/O-7/").json()["state"] == "draft"

    start_order(api, "O-8", total=50_000)
    transition(api, "O-8", "submit", wait=True)
    refused = transition(manager, "O-8", "approve", wait=True, payload={"note": "big"})
    allowed = transition(manager, "O-8", "approve", wait=True, payload={"override": True})
    assert (refused.status_code, refused.json()["code"]) == (422, "guard_failed")
    assert refused.json()["intent"]["status"] == "refused"
    assert allowed.status_code == 200 and allowed.json()["instance"]["state"] == "approved"


def test_refusals_have_clear_codes(worker, api, order_workflow):
    start_order(api, "O-9", total=10)

    unknown = transition(api, "O-9", "teleport")
    bad_payload = transition(api, "O-9", "reject", payload={"reason": 7})
    wrong_state_async = finished_task(api, transition(api, "O-9", "ship", payload={"tracking_number": "Z1"}))
    wrong_state_sync = transition(api, "O-9", "ship", wait=True, payload={"tracking_number": "Z1"})

    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_transition")
    assert (bad_payload.status_code, bad_payload.json()["code"]) == (422, "invalid_payload")
    assert bad_payload.json()["fields"] == {"payload.reason": ["7 is not of type 'string'"]}
    missing = transition(api, "O-9", "reject", payload={})
    assert missing.json()["fields"] == {"payload": ["'reason' is a required property"]}
    assert wrong_state_async["error"]["code"] == "invalid_source_state"
    assert (wrong_state_sync.status_code, wrong_state_sync.json()["code"]) == (409, "invalid_source_state")
    assert "does not leave state 'draft'" in wrong_state_sync.json()["message"]


def test_no_transition_leaves_a_final_state_not_even_a_wildcard_one(worker, api, order_workflow):
    start_order(api, "O-10", total=10)
    transition(api, "O-10", "cancel", wait=True)

    response = transition(api, "O-10", "cancel", wait=True)

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_source_state"
    assert "final state 'rejected'" in response.json()["message"]
    assert api.get("/api/v1/workflows/order/instances/O-10/").json()["is_final"] is True


def test_expected_state_turns_a_stale_intent_into_a_conflict(worker, api, order_workflow):
    start_order(api, "O-11", total=10)
    transition(api, "O-11", "submit", wait=True)

    response = transition(api, "O-11", "cancel", wait=True, expected_state="draft")

    assert (response.status_code, response.json()["code"]) == (409, "conflict")
    assert "not the expected 'draft'" in response.json()["message"]


def test_of_two_racing_intents_exactly_one_applies_and_the_other_is_a_conflict(
    worker, start_worker, api, order_workflow
):
    start_worker(queues="transitions", concurrency=2)  # with the session worker: four processes race
    subjects = [f"R-{i}" for i in range(8)]
    for subject in subjects:
        start_order(api, subject, total=10)
    instances = list(WorkflowInstance.objects.filter(subject_id__in=subjects))
    actor = Actor(kind="api_key", id="test", scopes=("*",))
    with transaction.atomic():  # both intents of each pair are published together, at commit
        pairs = [
            [intent_create(instance=i, transition="submit", actor=actor, expected_state=e) for e in ("draft", "")]
            for i in instances
        ]

    wait_for(
        lambda: not TransitionIntent.objects.filter(status="pending").exists(), timeout=30, message="intents applied"
    )
    for pair in pairs:
        outcomes = sorted(
            (i.status, i.error_code) for i in TransitionIntent.objects.filter(pk__in=[p.pk for p in pair])
        )
        assert outcomes == [("applied", ""), ("refused", "conflict")], outcomes
    assert TransitionLog.objects.filter(instance__in=instances, transition="submit").count() == len(instances)
    assert set(WorkflowInstance.objects.filter(pk__in=[i.pk for i in instances]).values_list("version", flat=True)) == {
        2
    }


def worker_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


def test_the_compare_and_set_refuses_an_intent_whose_instance_changed_under_it(worker, api, order_workflow):
    """Another transaction updates the instance after the intent read it and commits first:
    the intent's conditional UPDATE then matches no row, and it ends `conflict`."""
    start_order(api, "C-1", total=10)
    instance = WorkflowInstance.objects.get(subject_id="C-1")
    locked, release = threading.Event(), threading.Event()

    def concurrent_transition() -> None:
        try:
            with transaction.atomic():
                WorkflowInstance.objects.filter(pk=instance.pk).update(state="submitted", version=F("version") + 1)
                locked.set()
                release.wait(20)
        finally:
            connection.close()

    other = threading.Thread(target=concurrent_transition)
    other.start()
    assert locked.wait(10)
    response = transition(api, "C-1", "submit")  # reads version 1: the other update is not committed
    intent_id = response.json()["id"]
    wait_for(worker_waits_on_a_lock, message="the worker's UPDATE to wait on the row lock")
    release.set()
    other.join()

    intent = wait_for(lambda: TransitionIntent.objects.filter(pk=intent_id).exclude(status="pending").first())
    assert (intent.status, intent.error_code) == ("refused", "conflict")
    assert intent.error_message == (
        "The instance left version 1: another transition was applied first, and it is now in 'submitted' at version 2."
    )
    assert not TransitionLog.objects.filter(instance=instance, transition="submit").exists()


def test_a_lost_publish_is_recovered_by_the_sweeper(worker, api, order_workflow):
    from apps.workflows.services.transitions import intents_sweep

    start_order(api, "S-1", total=10)
    instance = WorkflowInstance.objects.get(subject_id="S-1")
    intent = intent_create(
        instance=instance, transition="submit", actor=Actor(kind="system", scopes=("*",)), publish=False
    )
    TransitionIntent.objects.filter(pk=intent.pk).update(created_at=F("created_at") - timedelta(minutes=5))

    assert intents_sweep() == 1
    wait_for(lambda: TransitionIntent.objects.get(pk=intent.pk).status == "applied")


def test_task_names_are_pinned():
    assert apply_transition.name == "signalbox.workflows.apply_transition"
    from apps.workflows.tasks import sweep_intents

    assert sweep_intents.name == "signalbox.workflows.sweep"


def test_instances_are_unique_per_subject_and_invisible_to_other_tenants(worker, api, other_api, order_workflow):
    start_order(api, "U-1")
    duplicate = api.post("/api/v1/workflows/order/instances/", {"subject_id": "U-1"}, format="json")

    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "instance_exists")
    assert other_api.get("/api/v1/workflows/order/instances/U-1/").status_code == 404
    assert transition(other_api, "U-1", "submit").status_code == 404
    intent = transition(api, "U-1", "cancel", wait=True).json()
    assert other_api.get(f"/api/v1/transition-intents/{intent['id']}/").status_code == 404
    assert other_api.get(intent["poll_url"]).status_code == 404


def test_idempotency_key_replays_the_first_answer(worker, api, order_workflow):
    start_order(api, "I-1", total=10)
    url = "/api/v1/workflows/order/instances/I-1/transitions/"

    first = api.post(url, {"transition": "submit"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(url, {"transition": "submit"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert TransitionIntent.objects.filter(instance__subject_id="I-1").count() == 1
    assert finished_task(api, first)["status"] == "succeeded"
