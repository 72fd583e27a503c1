"""Transition intents in one process (no worker): cancellation through the tasks API, metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.actors import Actor
from apps.observability import metrics
from apps.workflows.models import TransitionIntent, TransitionLog, WorkflowInstance
from apps.workflows.services.transitions import intent_apply, intent_create, intents_purge
from tests.workflows.conftest import start_order

pytestmark = pytest.mark.django_db

ACTOR = Actor(kind="api_key", id="sbx_test", scopes=("*",))


def test_cancelling_the_task_before_it_runs_cancels_the_intent(api, order_workflow):
    start_order(api, "K-1", total=10)
    intent = intent_create(instance=WorkflowInstance.objects.get(subject_id="K-1"), transition="submit", actor=ACTOR)

    cancelled = api.post(f"/api/v1/tasks/{intent.task_execution_id}/cancel/")
    applied = intent_apply(intent_id=intent.pk)

    assert cancelled.status_code in (200, 202), cancelled.json()
    assert (applied.status, applied.error_code) == ("refused", "cancelled")
    assert WorkflowInstance.objects.get(subject_id="K-1").state == "draft"


def test_applying_twice_changes_nothing_the_second_time(api, order_workflow):
    start_order(api, "K-2", total=10)
    intent = intent_create(instance=WorkflowInstance.objects.get(subject_id="K-2"), transition="submit", actor=ACTOR)

    intent_apply(intent_id=intent.pk)
    again = intent_apply(intent_id=intent.pk)

    assert again.status == "applied"
    assert WorkflowInstance.objects.get(subject_id="K-2").version == 2


def test_an_apply_time_refusal_is_counted_by_outcome(api, order_workflow):
    counter = metrics.TRANSITIONS.labels(stage="apply", outcome="guard_failed")
    before = counter._value.get()
    start_order(api, "K-3", total=0)
    intent = intent_create(instance=WorkflowInstance.objects.get(subject_id="K-3"), transition="submit", actor=ACTOR)

    intent_apply(intent_id=intent.pk)

    assert counter._value.get() == before + 1


def test_finished_intents_past_retention_are_purged_but_the_log_stays(api, order_workflow):
    start_order(api, "K-4", total=10)
    instance = WorkflowInstance.objects.get(subject_id="K-4")
    applied = intent_apply(intent_id=intent_create(instance=instance, transition="submit", actor=ACTOR).pk)
    waiting = intent_create(instance=instance, transition="cancel", actor=ACTOR)
    TransitionIntent.objects.update(created_at=timezone.now() - timedelta(days=31))

    assert intents_purge() == 1

    assert list(TransitionIntent.objects.values_list("pk", flat=True)) == [waiting.pk]
    assert TransitionLog.objects.filter(instance=instance, transition="submit").exists()
    assert not TransitionIntent.objects.filter(pk=applied.pk).exists()
