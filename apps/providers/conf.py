"""Typed access to the providers app's settings (defaults in project/settings.py; apps/core/conf.py says why).

The circuit breaker's knobs are a dict whose defaults are `BreakerSettings`' own (apps/providers/circuit.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from apps.core.conf import as_float, as_int, as_mapping, as_str_list, setting


@dataclass(frozen=True)
class ProvidersSettings:
    timeout: float  # SIGNALBOX_PROVIDER_TIMEOUT: seconds per provider call, in (0, 60]
    # SIGNALBOX_PROVIDER_CHAINS: the environment's provider names per channel, in order (its names are
    # checked against the adapters at start: apps/notifications/checks.py).
    chains: Mapping[str, tuple[str, ...]]
    health_ttl_seconds: int  # SIGNALBOX_PROVIDER_HEALTH_TTL: how long the overview reuses a health check
    # SIGNALBOX_PREFERENCES_LINK_MAX_AGE_DAYS: how long a signed preference link works (<= 0: none does).
    preferences_link_max_age_days: float


def providers_settings() -> ProvidersSettings:
    chains = as_mapping(setting("SIGNALBOX_PROVIDER_CHAINS"), "SIGNALBOX_PROVIDER_CHAINS")
    return ProvidersSettings(
        timeout=as_float(
            setting("SIGNALBOX_PROVIDER_TIMEOUT"), "SIGNALBOX_PROVIDER_TIMEOUT", positive=True, maximum=60
        ),
        chains={
            str(channel): as_str_list(names, f"SIGNALBOX_PROVIDER_CHAINS[{channel!r}]")
            for channel, names in chains.items()
        },
        health_ttl_seconds=as_int(setting("SIGNALBOX_PROVIDER_HEALTH_TTL"), "SIGNALBOX_PROVIDER_HEALTH_TTL", minimum=0),
        preferences_link_max_age_days=as_float(
            setting("SIGNALBOX_PREFERENCES_LINK_MAX_AGE_DAYS"), "SIGNALBOX_PREFERENCES_LINK_MAX_AGE_DAYS"
        ),
    )
