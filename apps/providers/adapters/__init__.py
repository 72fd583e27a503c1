"""One module per external provider; each class implements `apps.providers.base.Provider`.

`Adapter` holds what they share: the field lists that describe a configuration, building an
instance from one flat config dict (`from_config`), and the check that a config is complete.
Each adapter's `env_config()` maps the environment settings (project/settings.py,
"Providers") onto that same dict, so a tenant's row and the environment build the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from django.conf import settings

from apps.providers.base import Channel, Health, Message, SendResult


def default_timeout() -> float:
    return float(getattr(settings, "SIGNALBOX_PROVIDER_TIMEOUT", 10.0))


class Adapter:
    name: str
    channel: Channel
    # Stored encrypted, never shown in clear, never logged.
    secret_fields: tuple[str, ...] = ()
    # Stored and shown as they are.
    option_fields: tuple[str, ...] = ()
    # A config without one of these cannot send.
    required_fields: tuple[str, ...] = ()

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return (*cls.option_fields, *cls.secret_fields)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        known = set(cls.fields())
        return cls(**{k: v for k, v in config.items() if k in known and v not in (None, "")})

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        """This provider's config from the environment; empty values where nothing is set."""
        return {}

    @classmethod
    def missing(cls, config: Mapping[str, Any]) -> list[str]:
        """Required fields the config lacks (several names joined by `|` mean "one of")."""
        return [name for name in cls.required_fields if not any(config.get(n) for n in name.split("|"))]

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, list[str]]:
        """Format errors per field, beyond presence; overridden where a format is known."""
        return {}

    def send(self, message: Message) -> SendResult:
        raise NotImplementedError

    def check(self) -> Health | None:
        """A cheap live probe, where the provider has one; None means "no probe"."""
        return None
