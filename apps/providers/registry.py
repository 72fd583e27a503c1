"""Which providers carry a tenant's channel, in order: `provider_chain(tenant=…, channel=…)`.

A tenant's enabled `ProviderConfig` rows for the channel, by priority, come first; a tenant
with none uses the environment's chain (`SIGNALBOX_PROVIDER_CHAINS`, derived in
project/settings.py from which credentials are set). An empty chain means "nothing
configured": the notifications registry then uses its own default (the sink).
`ADAPTERS` is every provider class by name; `build` makes one from a config dict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from apps.core.crypto import DecryptionFailed
from apps.providers.adapters import Adapter
from apps.providers.adapters.fcm import FcmProvider
from apps.providers.adapters.sendgrid import SendGridProvider
from apps.providers.adapters.slack import SlackProvider
from apps.providers.adapters.smtp import SmtpProvider
from apps.providers.adapters.twilio import TwilioProvider
from apps.providers.adapters.webhook import DiscordProvider, TeamsProvider, WebhookProvider
from apps.providers.base import Channel, Provider
from apps.providers.conf import providers_settings
from apps.providers.models import ProviderConfig

log = logging.getLogger(__name__)

ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls
    for cls in (
        SendGridProvider,
        SmtpProvider,
        TwilioProvider,
        FcmProvider,
        SlackProvider,
        TeamsProvider,
        DiscordProvider,
        WebhookProvider,
    )
}


def names_for(channel: str) -> list[str]:
    return [name for name, cls in ADAPTERS.items() if cls.channel == channel]


def build(name: str, config: Mapping[str, Any], *, trusted: bool = False) -> Adapter:
    """`trusted` only for the environment's config: its connections skip the egress guard."""
    return ADAPTERS[name].from_config(config, trusted=trusted)


def environment_names(channel: str) -> list[str]:
    chains = providers_settings().chains
    names = list(chains.get(str(channel), []))
    for name in names:
        if name not in ADAPTERS or ADAPTERS[name].channel != channel:
            raise ImproperlyConfigured(
                f"SIGNALBOX_PROVIDER_CHAINS[{channel!r}] names {name!r}, not a {channel} provider."
            )
    return names


def environment_config(name: str) -> dict[str, Any]:
    return ADAPTERS[name].env_config()


def environment_chain(channel: str) -> list[Provider]:
    chain: list[Provider] = []
    for name in environment_names(channel):
        config = environment_config(name)
        missing = ADAPTERS[name].missing(config)
        if missing:
            log.error("environment provider is incomplete", extra={"provider": name, "missing": missing})
            continue
        chain.append(build(name, config, trusted=True))
    return chain


def tenant_configs(*, tenant: Any, channel: str) -> list[ProviderConfig]:
    """The tenant's enabled rows for the channel, in chain order."""
    return list(
        ProviderConfig.objects.filter(tenant=tenant, enabled=True, provider__in=names_for(channel)).order_by(
            "priority", "created_at"
        )
    )


def from_row(row: ProviderConfig) -> Adapter | None:
    """The adapter a row describes, or None (logged, without secrets) when it cannot be built."""
    cls = ADAPTERS.get(row.provider)
    if cls is None:
        log.error("provider config names an unknown provider", extra={"config": str(row.id), "provider": row.provider})
        return None
    try:
        config = row.config()
    except DecryptionFailed:
        log.error("provider config secrets cannot be decrypted", extra={"config": str(row.id)})
        return None
    missing = cls.missing(config)
    if missing:
        log.error("provider config is incomplete", extra={"config": str(row.id), "missing": missing})
        return None
    return cls.from_config(config)


def provider_chain(*, tenant: Any, channel: str) -> list[Provider]:
    """The ordered providers for this tenant's channel; empty when nothing is configured.

    Rows that cannot be built (undecryptable, incomplete) are skipped; if none is usable the
    environment's chain serves the tenant rather than nothing.
    """
    if channel == Channel.IN_APP:
        return []
    chain: list[Provider] = []
    for row in tenant_configs(tenant=tenant, channel=channel):
        adapter = from_row(row)
        if adapter is not None:
            chain.append(adapter)
    return chain or environment_chain(channel)
