"""The notifications app's configuration check, run at start with the platform's (tag `signalbox`,
apps/observability/checks.py): every provider named in the environment's chains exists and serves
that channel. Registered when `NotificationsConfig.ready()` imports this module."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured

from apps.notifications import channels
from apps.observability.checks import TAG
from apps.providers import registry
from apps.providers.conf import providers_settings


@register(TAG)
def check_providers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every provider named in the environment's chains exists and serves that channel."""
    errors: list[CheckMessage] = []
    try:
        chains = providers_settings().chains
    except ImproperlyConfigured:
        return errors  # a malformed setting: check_settings (apps/observability/checks.py) names it
    for channel in chains:
        try:
            registry.environment_names(channel)
        except ImproperlyConfigured as exc:
            errors.append(
                Error(
                    str(exc),
                    hint=f"Known {channel} providers: {', '.join(registry.names_for(channel)) or 'none'} "
                    f"(SIGNALBOX_{channel.upper()}_PROVIDERS).",
                    id="signalbox.E010",
                )
            )
    try:
        channels.reset()  # built once per process and cached: judge the current settings
        channels.available()
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="signalbox.E010"))
    return errors
