"""Maintenance of what providers report back: the dedup log of applied status events.

`signalbox.providers.purge_events` (beat, hourly, `maintenance`) deletes applied event ids older
than `SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS`, in short batches (apps/core/retention.py), so
the table stays bounded; providers stop retrying an event long before that.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.core.retention import RetentionPolicy, purge_policy
from apps.providers.models import ProviderEvent


def _model() -> type[ProviderEvent]:
    return ProviderEvent


def provider_events_retention_policy() -> RetentionPolicy:
    return RetentionPolicy(
        name="provider_events",
        model=_model,
        time_field="received_at",
        default_days=settings.SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS,
        per_tenant=False,
        description="Applied provider status event ids (SendGrid sg_event_id), kept to recognise retries.",
    )


@shared_task(name="signalbox.providers.purge_events", queue="maintenance", ignore_result=True)
def purge_events() -> int:
    rows, _ = purge_policy(provider_events_retention_policy(), tenants=[], max_seconds=120)
    return rows
