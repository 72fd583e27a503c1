"""Fixtures for the retention tests: rows of any age and status, written directly (no fan-out, so
no send task is published and nothing changes them behind the test's back)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.notifications.conftest import make_recipients, make_template  # noqa: F401

_serial = itertools.count()


class Build:
    def __init__(self, tenant: Any, template_maker: Callable[..., Any], recipient_maker: Callable[..., Any]) -> None:
        self.tenant = tenant
        self.make_recipients = recipient_maker
        template_maker(default_channels=["email", "in_app"])
        recipient_maker(1, prefix="anchor")

    def notification(self, *, days_old: float = 40, status: str = "completed", for_tenant: Any = None, **fields: Any):
        from apps.notifications.models import Notification
        from apps.notifications.services.notifications import notification_create

        tenant = for_tenant or self.tenant
        if for_tenant is not None:
            self.make_recipients(1, prefix="anchor", for_tenant=for_tenant)
        # Scheduled far ahead, so nothing is published; then given the age and status wanted.
        notification = notification_create(
            tenant=tenant,
            template="order_shipped" if for_tenant is None else None,
            content=None if for_tenant is None else {"email": {"subject": "s", "text": "t"}},
            payload={"order_id": "1"},
            recipients=["anchor-0"],
            scheduled_at=timezone.now() + timedelta(days=365),
        )
        created = timezone.now() - timedelta(days=days_old)
        Notification.objects.filter(pk=notification.pk).update(status=status, created_at=created, **fields)
        notification.refresh_from_db()
        return notification

    def deliveries(
        self,
        notification: Any,
        statuses: list[str],
        *,
        channel: str = "email",
        days_old: float = 40,
        read: bool = False,
        dedup_key: str | None = None,
        attempts: int = 0,
    ) -> list[Any]:
        from apps.notifications.models import Delivery, DeliveryAttempt

        recipients = self.make_recipients(len(statuses), prefix=f"r{next(_serial)}", for_tenant=notification.tenant)
        created = timezone.now() - timedelta(days=days_old)
        rows = Delivery.objects.bulk_create(
            [
                Delivery(
                    tenant_id=notification.tenant_id,
                    notification=notification,
                    recipient=recipient,
                    channel=channel,
                    status=status,
                    created_at=created,
                    read_at=created if read else None,
                    dedup_key=dedup_key,
                )
                for recipient, status in zip(recipients, statuses, strict=True)
            ]
        )
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(delivery=row, number=n + 1, outcome="accepted", created_at=created)
                for row in rows
                for n in range(attempts)
            ]
        )
        return rows


@pytest.fixture
def build(tenant: Any, make_template: Callable[..., Any], make_recipients: Callable[..., Any]) -> Build:  # noqa: F811
    return Build(tenant, make_template, make_recipients)
