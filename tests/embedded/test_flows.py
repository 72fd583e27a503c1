"""Flows on the embedded default: refused with a clear 422 (they move runs with PostgreSQL
statements), while the hooks they plug into notifications — inbox reads, outcomes, cancels —
run there as if no flow existed."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core.errors import Unprocessable
from apps.flows.services.definitions import flow_save
from apps.flows.services.engine import flows_wake
from apps.notifications.models import Delivery
from apps.notifications.services.notifications import notification_create


def test_saving_a_flow_is_refused_with_a_422_naming_postgresql(tenant: Any):
    document = {"key": "nudge", "steps": [{"id": "a", "type": "send", "channels": ["in_app"]}]}
    with pytest.raises(Unprocessable) as refused:
        flow_save(tenant=tenant, document=document)
    assert refused.value.code == "flows_need_postgresql" and refused.value.status_code == 422


def test_a_notification_asking_for_a_flow_is_refused_and_nothing_is_written(tenant: Any, people: list[Any]):
    with pytest.raises(Unprocessable) as refused:
        notification_create(
            tenant=tenant,
            template="",
            content={"in_app": {"title": "Hi"}},
            flow="nudge",
            recipients=[p.external_id for p in people],
        )
    assert refused.value.code == "flows_need_postgresql"
    assert not Delivery.objects.exists()


def test_waking_runs_is_a_no_op_without_flows(tenant: Any):
    assert flows_wake(["00000000-0000-0000-0000-000000000001"]) == 0
