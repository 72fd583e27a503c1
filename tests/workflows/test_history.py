"""The transition log keeps naming the intent each transition came from after finished intents are
purged (in one process, no worker)."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from apps.core.actors import Actor
from apps.workflows.models import TransitionIntent, TransitionLog, WorkflowInstance
from apps.workflows.services.transitions import intent_apply, intent_create, intents_purge
from tests.workflows.conftest import start_order

pytestmark = pytest.mark.django_db

ACTOR = Actor(kind="api_key", id="sbx_test", scopes=("*",))


def test_the_history_still_names_the_intent_after_the_intent_is_purged(api, order_workflow):
    start_order(api, "H-1", total=10)
    instance = WorkflowInstance.objects.get(subject_id="H-1")
    applied = intent_apply(intent_id=intent_create(instance=instance, transition="submit", actor=ACTOR).pk)
    TransitionIntent.objects.update(created_at=timezone.now() - timedelta(days=31))

    assert intents_purge() == 1

    assert not TransitionIntent.objects.filter(pk=applied.pk).exists()
    entry = TransitionLog.objects.get(instance=instance, transition="submit")
    assert (entry.intent_id, entry.intent_ref) == (None, applied.pk)
    history = api.get("/api/v1/workflows/order/instances/H-1/history/").json()["results"]
    assert [(h["kind"], h["intent_id"]) for h in history] == [("created", None), ("transition", str(applied.pk))]


def test_the_migration_copies_the_intent_id_onto_existing_log_rows(api, order_workflow):
    start_order(api, "H-2", total=10)
    instance = WorkflowInstance.objects.get(subject_id="H-2")
    applied = intent_apply(intent_id=intent_create(instance=instance, transition="submit", actor=ACTOR).pk)
    TransitionLog.objects.update(intent_ref=None)  # as rows written before the field existed
    migration = importlib.import_module("apps.workflows.migrations.0002_transition_log_intent_ref")

    migration.copy_intent_ids(apps, None)

    refs = dict(TransitionLog.objects.filter(instance=instance).values_list("transition", "intent_ref"))
    assert refs == {"": None, "submit": applied.pk}
