"""Fixtures for the notification tests: templates, recipients and a tenant whose external channels
record into the SinkRecord table (so the real worker's sends can be asserted from here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

ORDER_SHIPPED_CONTENT: dict[str, Any] = {
    "default": {
        "email": {
            "subject": "Order {{ order_id }} shipped",
            "text": "Hi {{ recipient.name }}, order {{ order_id }} is on its way.",
            "html": "<p>Hi {{ recipient.name }}, order <b>{{ order_id }}</b> is on its way.</p>",
        },
        "sms": {"text": "Order {{ order_id }} shipped."},
        "push": {"title": "Shipped", "body": "Order {{ order_id }}", "data": {"order": "{{ order_id }}"}},
        "in_app": {
            "title": "Order {{ order_id }} shipped",
            "body": "Track it.",
            "action_url": "/orders/{{ order_id }}",
        },
    },
    "fr": {
        "email": {"subject": "Commande {{ order_id }} expédiée", "text": "Bonjour {{ recipient.name }}, c'est parti."},
        "in_app": {"title": "Commande {{ order_id }} expédiée", "body": "Suivez-la."},
    },
}

RECORDING = {c: ["recording_sink"] for c in ("email", "sms", "push", "chat", "webhook")}


@pytest.fixture
def recording_tenant(tenant: Any) -> Any:
    """The `acme` tenant with every external channel on the recording sink adapter."""
    tenant.settings = {**tenant.settings, "channel_providers": RECORDING}
    tenant.save(update_fields=["settings"])
    return tenant


@pytest.fixture
def make_template(tenant: Any) -> Callable[..., Any]:
    from apps.notifications.services.templates import template_create

    def make(
        key: str = "order_shipped",
        *,
        content: dict[str, Any] | None = None,
        variables: list[Any] | None = None,
        default_channels: list[str] | None = None,
        category: str = "orders",
        for_tenant: Any = None,
    ) -> Any:
        return template_create(
            tenant=for_tenant or tenant,
            key=key,
            definition={
                "name": key.replace("_", " "),
                "category": category,
                "variables": variables if variables is not None else [{"name": "order_id", "example": "A-1"}],
                "default_channels": default_channels if default_channels is not None else ["email", "in_app"],
                "content": content or ORDER_SHIPPED_CONTENT,
            },
        )

    return make


@pytest.fixture
def make_recipients(tenant: Any) -> Callable[..., list[Any]]:
    """Upserts recipients `<prefix>-0..n-1` with an email each (plus any overrides); returns them."""
    from apps.notifications.models import Recipient
    from apps.notifications.services.recipients import recipients_upsert

    def make(n: int, *, prefix: str = "user", for_tenant: Any = None, **attrs: Any) -> list[Any]:
        owner = for_tenant or tenant
        items = [
            {"external_id": f"{prefix}-{i}", "email": f"{prefix}-{i}@example.com", "name": f"User {i}", **attrs}
            for i in range(n)
        ]
        for start in range(0, n, 10000):
            recipients_upsert(tenant=owner, items=items[start : start + 10000])
        return list(Recipient.objects.filter(tenant=owner, external_id__startswith=f"{prefix}-").order_by("pk"))

    return make
