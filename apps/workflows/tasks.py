"""Celery tasks for workflows: thin wrappers that take ids and call a service."""

from __future__ import annotations

from celery import shared_task

from apps.workflows.services import transitions


@shared_task(name="signalbox.workflows.apply_transition", queue="transitions", ignore_result=True)
def apply_transition(intent_id: str) -> None:
    """Applies one transition intent (idempotent: a finished intent is left alone)."""
    transitions.intent_apply(intent_id=intent_id)


@shared_task(name="signalbox.workflows.sweep", queue="transitions", ignore_result=True)
def sweep_intents() -> int:
    """Beat: republishes intents that were committed but never applied."""
    return transitions.intents_sweep()


@shared_task(name="signalbox.maintenance.purge_transition_intents", queue="maintenance", ignore_result=True)
def purge_intents() -> int:
    """Beat: deletes finished transition intents past retention (the transition log stays)."""
    return transitions.intents_purge()
