"""Reads: which providers a tenant has, which chain is in effect per channel, and their health.

Health is "the config is complete" plus, where the provider has one, a cheap live probe
(SMTP NOOP, an FCM access token) and the error rate of its recent attempts for this tenant.
Results are cached for SIGNALBOX_PROVIDER_HEALTH_TTL seconds, so the overview page never
hammers a provider.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from django.core.cache import cache

from apps.core.crypto import DecryptionFailed
from apps.providers import registry
from apps.providers.base import Channel, Health
from apps.providers.conf import providers_settings
from apps.providers.models import ProviderConfig

RECENT_ATTEMPTS = 50
# Above this share of failed recent attempts a provider is reported unhealthy.
MAX_ERROR_RATE = 0.5


@dataclass
class ProviderStatus:
    channel: str
    provider: str
    name: str
    source: str  # "tenant" or "environment"
    id: str | None = None
    priority: int | None = None
    enabled: bool = True
    # Position in the channel's effective chain (0 = first); None when not in it.
    position: int | None = None
    configured: bool = False
    missing: list[str] = field(default_factory=list)
    healthy: bool = False
    detail: str = ""
    recent_attempts: int = 0
    recent_error_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RecentOutcomes(Protocol):
    """Whether each of the tenant's last `limit` attempts through `provider` was accepted, newest first."""

    def __call__(self, *, tenant: Any, provider: str, limit: int) -> list[bool]: ...


def _no_attempts(*, tenant: Any, provider: str, limit: int) -> list[bool]:
    return []


# Delivery attempts are recorded above this app (apps.notifications), which plugs in how to read
# them in its `ready()`; until then (a process without it) no provider has recent attempts.
_recent_outcomes: RecentOutcomes = _no_attempts


def register_recent_outcomes(source: RecentOutcomes) -> None:
    """Called once by `NotificationsConfig.ready()`."""
    global _recent_outcomes
    _recent_outcomes = source


def recent_error_rate(*, tenant: Any, provider: str) -> tuple[int, float | None]:
    """(attempts looked at, share that failed) over the tenant's last attempts through this provider."""
    accepted = _recent_outcomes(tenant=tenant, provider=provider, limit=RECENT_ATTEMPTS)
    if not accepted:
        return 0, None
    failed = sum(1 for ok in accepted if not ok)
    return len(accepted), round(failed / len(accepted), 3)


def probe(name: str, config: dict[str, Any], *, trusted: bool = False) -> Health | None:
    """The provider's live check, cached briefly per config (the key never contains a secret in clear).

    `trusted` for the environment's config only: a tenant's probe connects through the egress guard."""
    fingerprint = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    key = f"providers:health:{name}:{'env' if trusted else 'tenant'}:{fingerprint}"
    cached = cache.get(key)
    if cached is not None:
        return Health(*cached) if cached else None
    health = registry.build(name, config, trusted=trusted).check()
    cache.set(key, (health.ok, health.detail) if health else (), providers_settings().health_ttl_seconds)
    return health


def _assess(
    status: ProviderStatus, *, tenant: Any, config: dict[str, Any] | None, live: bool, trusted: bool = False
) -> ProviderStatus:
    cls = registry.ADAPTERS[status.provider]
    if config is None:
        status.detail = "The secrets cannot be decrypted with the configured keys."
        return status
    status.missing = cls.missing(config)
    status.configured = not status.missing
    if not status.configured:
        status.detail = f"Missing: {', '.join(status.missing)}."
        return status
    status.recent_attempts, status.recent_error_rate = recent_error_rate(tenant=tenant, provider=status.provider)
    health = probe(status.provider, config, trusted=trusted) if live else None
    status.healthy = (health is None or health.ok) and (
        status.recent_error_rate is None or status.recent_error_rate <= MAX_ERROR_RATE
    )
    details = [health.detail] if health is not None else []
    if status.recent_error_rate is not None:
        details.append(f"{status.recent_error_rate:.0%} of the last {status.recent_attempts} attempts failed")
    status.detail = "; ".join(details) or "configured"
    return status


def provider_statuses(*, tenant: Any, live: bool = True) -> list[ProviderStatus]:
    """Every provider the tenant could use, per channel: its own rows, then the environment's chain."""
    rows = list(ProviderConfig.objects.filter(tenant=tenant).order_by("priority", "created_at"))
    statuses: list[ProviderStatus] = []
    for channel in Channel:
        if channel is Channel.IN_APP:
            continue
        position = 0
        for row in (row for row in rows if row.provider in registry.names_for(channel)):
            try:
                config: dict[str, Any] | None = row.config()
            except DecryptionFailed:
                config = None
            status = ProviderStatus(
                channel=channel,
                provider=row.provider,
                name=row.name,
                source="tenant",
                id=str(row.id),
                priority=row.priority,
                enabled=row.enabled,
            )
            _assess(status, tenant=tenant, config=config, live=live and row.enabled)
            if row.enabled and status.configured:
                status.position, position = position, position + 1
            statuses.append(status)
        # As in registry.provider_chain: the environment serves a tenant with no usable row.
        uses_own = position > 0
        for name in registry.environment_names(channel):
            status = ProviderStatus(channel=channel, provider=name, name=name, source="environment")
            config = registry.environment_config(name)
            _assess(status, tenant=tenant, config=config, live=live and not uses_own, trusted=True)
            if not uses_own and status.configured:
                status.position, position = position, position + 1
            statuses.append(status)
    return statuses


def provider_config_get(*, tenant: Any, ref: str) -> ProviderConfig | None:
    """A tenant's config by id or by name."""
    query = ProviderConfig.objects.filter(tenant=tenant)
    try:
        uuid.UUID(ref)
    except ValueError:
        return query.filter(name=ref).first()
    return query.filter(pk=ref).first()
