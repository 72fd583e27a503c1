"""Watchers: recipients who follow a subject (an order, a ticket) and are notified of what happens to it."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from apps.core.errors import Conflict, Unprocessable
from apps.events.models import Watcher
from apps.events.types import subject_of


def watcher_add(*, tenant: Any, subject: Any, recipient: str) -> Watcher:
    subject_type, subject_id = subject_of(subject)
    if not subject_type or not subject_id:
        raise Unprocessable(
            "A watcher follows a subject {type, id}.", code="invalid_subject", fields={"subject": ["Required."]}
        )
    if not recipient or len(recipient) > 200:
        raise Unprocessable(
            "recipient is an external id.", code="invalid_recipient", fields={"recipient": ["Required."]}
        )
    try:
        with transaction.atomic():
            return Watcher.objects.create(
                tenant=tenant, subject_type=subject_type, subject_id=subject_id, recipient=recipient
            )
    except IntegrityError as exc:
        raise Conflict(f"{recipient!r} already watches this subject.", code="watcher_exists") from exc


def watcher_remove(*, watcher: Watcher) -> None:
    watcher.delete()


def watchers_of(*, tenant: Any, subject: Any) -> list[str]:
    """The external ids of the recipients watching `subject`, oldest first."""
    subject_type, subject_id = subject_of(subject)
    return list(
        Watcher.objects.filter(tenant=tenant, subject_type=subject_type, subject_id=subject_id)
        .order_by("created_at", "id")
        .values_list("recipient", flat=True)
    )
