"""`signalbox_transitions_total{stage, outcome}`: refusals at request time count too, and no label is a
tenant-chosen workflow key (one series per key would grow without bound)."""

from __future__ import annotations

import pytest

from apps.observability import metrics
from apps.workflows.models import TransitionIntent
from tests.workflows.conftest import start_order, transition

pytestmark = pytest.mark.django_db


def _count(stage: str, outcome: str) -> float:
    return metrics.TRANSITIONS.labels(stage=stage, outcome=outcome)._value.get()


def test_the_counter_has_bounded_labels_only():
    assert metrics.TRANSITIONS._labelnames == ("stage", "outcome")


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("teleport", {}, 422, "unknown_transition"),
        ("reject", {"payload": {"reason": "no"}}, 422, "invalid_payload"),
        ("approve", {}, 403, "transition_forbidden"),
        ("reject", {"expected_state": "limbo", "payload": {"reason": "Out of stock"}}, 422, "unknown_state"),
    ],
)
def test_a_transition_refused_at_request_time_is_counted(api, clerk, order_workflow, name, body, status, code):
    start_order(api, "M-1", total=10)
    assert transition(api, "M-1", "submit", wait=True).status_code == 200
    before = _count("request", code)

    response = transition(clerk, "M-1", name, **body)

    assert (response.status_code, response.json()["code"]) == (status, code)
    assert _count("request", code) == before + 1
    assert not TransitionIntent.objects.filter(transition=name).exists()  # refused before anything was recorded


def test_applied_and_refused_on_apply_are_counted_under_the_apply_stage(api, order_workflow):
    applied, guard_failed = _count("apply", "applied"), _count("apply", "guard_failed")
    start_order(api, "M-2", total=10)
    start_order(api, "M-3", total=0)

    assert transition(api, "M-2", "submit", wait=True).status_code == 200
    assert transition(api, "M-3", "submit", wait=True).json()["code"] == "guard_failed"

    assert _count("apply", "applied") == applied + 1
    assert _count("apply", "guard_failed") == guard_failed + 1
