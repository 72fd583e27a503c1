"""Workflow fixtures: the order workflow shipped in docs/examples/order.yaml, loaded as a user would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from tests.conftest import client_for
from tests.events.conftest import receiver, settle_worker  # noqa: F401  (a webhook receiver; waiting for workers)

ORDER_YAML = Path(__file__).resolve().parents[2] / "docs" / "examples" / "order.yaml"


ORDER_APPROVED_TEMPLATE = {
    "variables": ["order", "total"],
    "default_channels": ["in_app"],
    "content": {"default": {"in_app": {"title": "Order {{ order }} approved", "body": "Total: {{ total }}"}}},
}


@pytest.fixture
def order_workflow(tenant: Any) -> Any:
    """The worked example, loaded with `manage.py loadworkflow`, and what its effects need:
    the `order-approved` template and the customer `cust-1`."""
    from apps.notifications.services.recipients import recipient_create
    from apps.notifications.services.templates import template_create
    from apps.workflows.models import WorkflowDefinition

    call_command("loadworkflow", str(ORDER_YAML), tenant=tenant.slug)
    template_create(tenant=tenant, key="order-approved", definition=ORDER_APPROVED_TEMPLATE)
    recipient_create(tenant=tenant, data={"external_id": "cust-1", "name": "Ada"})
    return WorkflowDefinition.objects.get(tenant=tenant, key="order")


@pytest.fixture
def clerk(tenant: Any) -> Any:
    """May apply transitions, but not the ones guarded by the admin scope."""
    return client_for(tenant, ["transitions:write"])


@pytest.fixture
def manager(tenant: Any) -> Any:
    return client_for(tenant, ["transitions:write", "admin"])


def start_order(client: Any, subject_id: str, **data: Any) -> dict[str, Any]:
    data.setdefault("customer_id", "cust-1")
    response = client.post(
        "/api/v1/workflows/order/instances/", {"subject_id": subject_id, "data": data}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()


def transition(client: Any, subject_id: str, name: str, *, wait: bool = False, **body: Any) -> Any:
    url = f"/api/v1/workflows/order/instances/{subject_id}/transitions/" + ("?wait=true" if wait else "")
    return client.post(url, {"transition": name, **body}, format="json")
