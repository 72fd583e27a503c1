"""What the providers app hands the platform's upkeep: its periodic job (registered by
`ProvidersConfig.ready()`; core knows none of it)."""

from __future__ import annotations

from apps.core.periodic import PeriodicJob

PERIODIC_JOBS = (
    PeriodicJob(
        name="providers: purge applied status event ids",
        task="signalbox.providers.purge_events",
        every_seconds=3600,
        description="Deletes SendGrid event ids older than SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS (dedup log).",
    ),
)
