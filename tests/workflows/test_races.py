"""Racing transition intents: of intents accepted at one instance version exactly one applies.

The workflow below is built so that each racing transition also leaves the other's target state
(`submit` leaves `cancelled`, `cancel` leaves `submitted`): the source-state check cannot stop the
loser, only the version the intent was accepted at can.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, transaction

from apps.workflows.models import TransitionIntent, TransitionLog, WorkflowInstance
from tests.conftest import client_for, wait_for

ROUNDS = 24

RACE_WORKFLOW = {
    "key": "race",
    "states": ["draft", "submitted", "cancelled", "done"],
    "initial": "draft",
    "finals": ["done"],
    "transitions": [
        {"name": "submit", "from": ["draft", "cancelled"], "to": "submitted"},
        {"name": "cancel", "from": ["draft", "submitted"], "to": "cancelled"},
        {"name": "finish", "from": ["submitted", "cancelled"], "to": "done"},
    ],
}
TARGET = {"submit": "submitted", "cancel": "cancelled"}


@pytest.fixture
def race_workflow(api: Any) -> None:
    response = api.post("/api/v1/workflows/", RACE_WORKFLOW, format="json")
    assert response.status_code == 201, response.json()


def start(client: Any, subject_id: str) -> None:
    response = client.post("/api/v1/workflows/race/instances/", {"subject_id": subject_id}, format="json")
    assert response.status_code == 201, response.json()


def post(client: Any, subject_id: str, name: str, *, wait: bool = False, **body: Any) -> Any:
    url = f"/api/v1/workflows/race/instances/{subject_id}/transitions/" + ("?wait=true" if wait else "")
    return client.post(url, {"transition": name, **body}, format="json")


def history(client: Any, subject_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/workflows/race/instances/{subject_id}/history/")
    return [h for h in response.json()["results"] if h["kind"] == "transition"]


def assert_one_winner(client: Any, subject_id: str) -> tuple[TransitionIntent, TransitionIntent]:
    """Exactly one intent applied, the other refused `conflict` naming the state it lost to;
    the history holds that one transition and the instance is in its target state."""
    intents = list(TransitionIntent.objects.filter(instance__subject_id=subject_id))
    outcomes = sorted((i.status, i.error_code) for i in intents)
    assert outcomes == [("applied", ""), ("refused", "conflict")], (subject_id, outcomes)
    winner = next(i for i in intents if i.status == "applied")
    loser = next(i for i in intents if i.status == "refused")
    assert f"{winner.transition!r} was applied first" in loser.error_message
    assert f"now in {TARGET[winner.transition]!r} at version 2" in loser.error_message
    assert [(h["transition"], h["to"]) for h in history(client, subject_id)] == [
        (winner.transition, TARGET[winner.transition])
    ]
    instance = WorkflowInstance.objects.get(workflow_key="race", subject_id=subject_id)
    assert (instance.state, instance.version) == (TARGET[winner.transition], 2)
    return winner, loser


def test_racing_intents_accepted_at_one_version_apply_once_across_two_workers(worker, start_worker, api, race_workflow):
    """Asynchronous: both intents of each pair are accepted at version 1 (the requests share one
    transaction, so both are published at its commit), then four worker processes race them."""
    start_worker(queues="transitions", concurrency=2)
    subjects = [f"A-{i}" for i in range(ROUNDS)]
    for subject in subjects:
        start(api, subject)
    with transaction.atomic():
        for n, subject in enumerate(subjects):
            pair = ("submit", "cancel") if n % 2 else ("cancel", "submit")
            assert [post(api, subject, name).status_code for name in pair] == [202, 202]

    wait_for(
        lambda: not TransitionIntent.objects.filter(status="pending").exists(), timeout=60, message="intents applied"
    )
    for subject in subjects:
        _, loser = assert_one_winner(api, subject)
        task = api.get(f"/api/v1/tasks/{loser.task_execution_id}/").json()
        assert (task["status"], task["error"]["code"]) == ("failed", "conflict"), task
    assert TransitionLog.objects.filter(instance__workflow_key="race").exclude(transition="").count() == ROUNDS


def test_a_waiting_request_and_a_queued_intent_accepted_at_one_version_apply_once(worker, api, race_workflow):
    """Mixed: an intent is queued at version 1, then a `?wait=true` request applies another before a
    worker gets to the first. The queued one was accepted at version 1, so it loses even though its
    transition leaves the state the other one reached."""
    subjects = [f"M-{i}" for i in range(ROUNDS // 2)]
    for subject in subjects:
        start(api, subject)
    waited = {}
    with transaction.atomic():  # the queued intents are published at commit, after the waiting ones applied
        for n, subject in enumerate(subjects):
            queued, now = ("submit", "cancel") if n % 2 else ("cancel", "submit")
            assert post(api, subject, queued).status_code == 202
            waited[subject] = post(api, subject, now, wait=True)

    wait_for(
        lambda: not TransitionIntent.objects.filter(status="pending").exists(), timeout=60, message="intents applied"
    )
    for subject in subjects:
        assert waited[subject].status_code == 200, waited[subject].json()
        winner, _ = assert_one_winner(api, subject)
        assert winner.transition == waited[subject].json()["transition"]


def race_in_threads(clients: list[Any], subject_id: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """Sends one `?wait=true` request per client at the same moment, each on its own connection."""
    barrier = threading.Barrier(len(clients))
    answers: list[Any] = [None] * len(clients)

    def send(i: int) -> None:
        try:
            barrier.wait(10)
            answers[i] = post(clients[i], subject_id, wait=True, **bodies[i])
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def test_racing_wait_true_requests_pinned_to_one_version_apply_exactly_once(worker, tenant, api, race_workflow):
    """Two clients read the instance at version 1 and each sends `if_version: 1` with `?wait=true`
    at the same moment: one is answered 200, the other 409 `conflict` with the instance it lost to
    (at once if it arrives after the winner committed, else when applied)."""
    clients = [api, client_for(tenant)]
    for n in range(ROUNDS):
        subject = f"P-{n}"
        start(api, subject)
        seen = api.get(f"/api/v1/workflows/race/instances/{subject}/").json()["version"]
        pair = ["submit", "cancel"] if n % 2 else ["cancel", "submit"]

        answers = race_in_threads(clients, subject, [{"name": name, "if_version": seen} for name in pair])

        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 409], (subject, [a.json() for a in answers])
        won = next(a.json() for a in answers if a.status_code == 200)
        lost = next(a.json() for a in answers if a.status_code == 409)
        assert lost["code"] == "conflict"
        assert (lost["instance"]["state"], lost["instance"]["version"]) == (TARGET[won["transition"]], 2)
        assert [h["transition"] for h in history(api, subject)] == [won["transition"]]
        assert TransitionIntent.objects.filter(instance__subject_id=subject, status="applied").count() == 1


def test_racing_wait_true_requests_never_both_apply_from_one_version(worker, tenant, api, race_workflow):
    """Without `if_version` each intent pins the version it was accepted at. Whether the two requests
    overlap is up to the scheduler; what must hold is that no two intents accepted at one version
    both apply, and the history has one transition per applied intent."""
    clients = [api, client_for(tenant)]
    for n in range(ROUNDS):
        subject = f"I-{n}"
        start(api, subject)
        pair = ["submit", "cancel"] if n % 2 else ["cancel", "submit"]

        answers = race_in_threads(clients, subject, [{"name": name} for name in pair])

        assert all(a.status_code in (200, 409) for a in answers), [a.json() for a in answers]
        applied = TransitionIntent.objects.filter(instance__subject_id=subject, status="applied")
        versions = list(applied.values_list("observed_version", flat=True))
        assert len(versions) == len(set(versions)), (subject, versions)
        assert len(history(api, subject)) == len(versions)
        for a in answers:
            if a.status_code == 409:
                assert a.json()["code"] == "conflict"


def test_a_stale_if_version_is_refused_at_once_and_records_nothing(worker, api, race_workflow):
    start(api, "S-1")
    assert post(api, "S-1", "submit", wait=True).status_code == 200

    response = post(api, "S-1", "cancel", if_version=1)

    assert (response.status_code, response.json()["code"]) == (409, "conflict")
    assert "'submit' was applied first" in response.json()["message"]
    assert response.json()["fields"] == {"if_version": ["The instance is at version 2, in state 'submitted'."]}
    ahead = post(api, "S-1", "cancel", if_version=9)
    assert (ahead.status_code, ahead.json()["code"]) == (409, "conflict")
    assert ahead.json()["message"] == "The instance is at version 2 (in 'submitted'), not 9."
    assert not TransitionIntent.objects.filter(instance__subject_id="S-1", transition="cancel").exists()
    pinned = post(api, "S-1", "cancel", wait=True, if_version=2)
    assert pinned.status_code == 200, pinned.json()
    assert pinned.json()["observed_version"] == 2
