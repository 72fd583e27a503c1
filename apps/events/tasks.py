"""Celery tasks for events and webhooks: thin wrappers that take ids and call a service."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.events.services import events, processing, webhooks


@shared_task(name="signalbox.events.process", queue="events", ignore_result=True)
def process_event(event_id: str) -> None:
    """Runs the event's rules and fans it out to webhook endpoints (idempotent: claims the event row).

    A failure is recorded on the event and retried on its own schedule, never raised to Celery.
    """
    processing.event_process(event_id=event_id)


@shared_task(name="signalbox.events.sweep", queue="events", ignore_result=True)
def sweep_events() -> int:
    """Beat: republishes pending events nobody took (a lost publish, a long retry, a lost worker)."""
    return events.events_sweep()


@shared_task(name="signalbox.webhooks.deliver", queue="webhooks", ignore_result=True)
def deliver_message(message_id: str) -> str | None:
    """Claims one webhook message and makes one attempt; retries are scheduled by the service."""
    return webhooks.message_deliver(message_id=message_id)


@shared_task(name="signalbox.webhooks.dispatch_due", queue="webhooks", ignore_result=True)
def dispatch_due() -> int:
    """Beat: publishes messages whose `next_attempt_at` has come, reclaims ones of dead workers."""
    return webhooks.webhooks_dispatch_due()


@shared_task(name="signalbox.maintenance.purge_events", queue="maintenance")
def purge_events() -> dict[str, Any]:
    """Beat: drops expired events partitions (PostgreSQL), then deletes events (and their
    executions, messages, attempts) past retention in batches.

    Its result (kept by the result backend, like `signalbox.maintenance.purge`'s) is the report:
    rows deleted per table, and the partitions dropped.
    """
    return events.events_purge_run()
