"""Fixtures of the flow tests: the notification fixtures (a tenant whose external channels record
into SinkRecord, templates, recipients) and helpers to save flows and drive the clock.

The clock: due times are rows, and the engine's services take `now`. A test runs
`flows_advance(now=start + 31 minutes)` in its own process to play what the dispatcher would do
half an hour later; the sends it publishes are made by the real worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.flows.models import FlowRun
from apps.flows.services.definitions import flow_save
from apps.notifications.models import SinkRecord
from tests.conftest import wait_for
from tests.notifications.conftest import make_recipients, make_template, recording_tenant
from tests.reliability.conftest import own_queue

__all__ = ["make_recipients", "make_template", "own_queue", "recording_tenant"]


@pytest.fixture
def make_flow(tenant: Any) -> Callable[..., Any]:
    def make(document: dict[str, Any], *, for_tenant: Any = None) -> Any:
        return flow_save(tenant=for_tenant or tenant, document=document)[0]

    return make


def runs_at(notification: Any, step: str, *, phase: str | None = None, status: str = "waiting") -> int:
    rows = FlowRun.objects.filter(notification_id=notification.pk, step=step, status=status)
    return rows.filter(phase=phase).count() if phase else rows.count()


def wait_runs(notification: Any, step: str, n: int, *, phase: str | None = None, status: str = "waiting") -> None:
    wait_for(
        lambda: runs_at(notification, step, phase=phase, status=status) == n,
        timeout=30,
        message=f"{n} runs {status} at {step}",
    )


def sent(channel: str) -> list[SinkRecord]:
    return list(SinkRecord.objects.filter(channel=channel))
