"""Reads of flow runs for other apps' answers (through `apps.notifications.hooks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import F

from apps.flows.models import FlowRun


def flow_run_for_delivery(*, tenant_id: Any, notification_id: Any, recipient_id: Any) -> Mapping[str, Any] | None:
    """The recipient's run through the notification's flow, for the delivery's detail: one indexed read
    (the run's unique `(notification_id, recipient)`), None when the notification ran without a flow."""
    return (
        FlowRun.objects.filter(tenant_id=tenant_id, notification_id=notification_id, recipient_id=recipient_id)
        .values(
            "id",
            "step",
            "phase",
            "status",
            "due_at",
            "finished_at",
            "history",
            flow=F("instance__flow_version__flow__key"),
            version=F("instance__flow_version__version"),
        )
        .first()
    )
