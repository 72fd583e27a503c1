"""The providers' overview reads the error rate of a provider's recent attempts from the notifications
app (which records them, a layer above), through what `NotificationsConfig.ready()` plugs in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from apps.notifications.models import Delivery, DeliveryAttempt
from apps.notifications.services.notifications import notification_create
from apps.providers import selectors
from apps.providers.services import provider_config_create
from sandbox.testing import SandboxProcess
from tests.notifications.conftest import make_recipients, make_template  # noqa: F401
from tests.providers.conftest import sandbox_config_for

pytestmark = pytest.mark.django_db

NO_PROVIDERS: dict[str, list[str]] = {"email": [], "sms": [], "push": [], "chat": [], "webhook": []}


def attempts(tenant: Any, recipients: list[Any], outcomes: list[str], *, provider: str = "smtp") -> None:
    """One delivery per outcome, each with one attempt through `provider` (no send is published)."""
    notification = notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": "1"},
        recipients=[r.external_id for r in recipients],
        scheduled_at=timezone.now() + timedelta(days=365),
    )
    rows = Delivery.objects.bulk_create(
        [
            Delivery(tenant_id=tenant.pk, notification=notification, recipient=recipient, channel="email")
            for recipient in recipients
        ]
    )
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(delivery=row, number=1, provider=provider, outcome=outcome)
            for row, outcome in zip(rows, outcomes, strict=True)
        ]
    )


@override_settings(SIGNALBOX_PROVIDER_CHAINS=NO_PROVIDERS)
def test_the_overview_counts_the_tenants_recent_failed_attempts_through_the_provider(
    tenant: Any,
    other_tenant: Any,
    make_template: Callable[..., Any],  # noqa: F811
    make_recipients: Callable[..., list[Any]],  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    make_template(default_channels=["email"])
    for owner in (tenant, other_tenant):
        options = sandbox_config_for(sandbox, "smtp")
        provider_config_create(tenant=owner, name="relay", provider="smtp", options=options)
    attempts(tenant, make_recipients(4, prefix="a"), ["accepted", "accepted", "accepted", "permanent"])
    attempts(tenant, make_recipients(2, prefix="b"), ["transient", "transient"], provider="sendgrid")

    (relay,) = [s for s in selectors.provider_statuses(tenant=tenant, live=False) if s.name == "relay"]
    (theirs,) = [s for s in selectors.provider_statuses(tenant=other_tenant, live=False) if s.name == "relay"]

    assert (relay.recent_attempts, relay.recent_error_rate) == (4, 0.25)
    assert relay.healthy is True and "25% of the last 4 attempts failed" in relay.detail
    assert (theirs.recent_attempts, theirs.recent_error_rate) == (0, None)  # another tenant's attempts never count


@override_settings(SIGNALBOX_PROVIDER_CHAINS=NO_PROVIDERS)
def test_a_provider_whose_recent_attempts_mostly_failed_is_reported_unhealthy(
    tenant: Any,
    make_template: Callable[..., Any],  # noqa: F811
    make_recipients: Callable[..., list[Any]],  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    make_template(default_channels=["email"])
    provider_config_create(tenant=tenant, name="relay", provider="smtp", options=sandbox_config_for(sandbox, "smtp"))
    attempts(tenant, make_recipients(3, prefix="a"), ["permanent", "transient", "accepted"])

    (relay,) = [s for s in selectors.provider_statuses(tenant=tenant, live=False) if s.name == "relay"]

    assert (relay.recent_attempts, relay.recent_error_rate) == (3, 0.667)
    assert relay.healthy is False
