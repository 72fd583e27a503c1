"""One module per external provider; each class implements `apps.providers.base.Provider`.

`Adapter` holds what they share: the field lists that describe a configuration, building an
instance from one flat config dict (`from_config`), and the check that a config is complete.
Each adapter's `env_config()` maps the environment settings (project/settings.py,
"Providers") onto that same dict, so a tenant's row and the environment build the same way.

A tenant's config may name where the provider is reached (SendGrid `host`, Twilio and Slack
`api_base_url`, Slack, Teams and Discord `webhook_url`, FCM `endpoint` and the key's `token_uri`,
SMTP `host`/`port`), and the test send and health probes connect there and show the answer. Two
checks hold such values to the egress guard (`apps.core.net`):

- when the config is saved, `url_problems` and `host_problems` (called from `validate_config`):
  the name must resolve, to no private, loopback, link-local or reserved address, and URLs must
  be https, unless `SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE`;
- at every connection, because a name can resolve elsewhere by then (DNS rebinding): an adapter
  built from a tenant's config (`trusted` false, the default) connects through the guard's
  transports, which resolve once, refuse internal addresses, connect to the checked address and
  follow no redirect. The classification of a refusal is `apps.providers.classify.from_network_error`.

Only the environment's adapters (`from_config(…, trusted=True)`, built by the registry from the
operator's settings) use the SDKs' own transports: an operator may point them at a relay on
localhost or behind a proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import urlsplit

from apps.core.net import UnresolvableHost, UnsafeUrl, allow_private_default, check_host, resolve_public_address
from apps.providers.base import Channel, Health, Message, SendResult
from apps.providers.conf import providers_settings


def default_timeout() -> float:
    return providers_settings().timeout


def url_problems(url: Any) -> list[str]:
    """Why a tenant may not point a provider at this URL; empty when it may."""
    allow_private = allow_private_default()
    problems = []
    if not allow_private and urlsplit(str(url)).scheme != "https":
        problems.append("An https:// URL.")
    try:
        resolve_public_address(str(url), allow_private=allow_private)
    except (UnsafeUrl, UnresolvableHost) as exc:
        problems.append(exc.message)
    return problems


def host_problems(host: Any, port: Any) -> list[str]:
    """Why a tenant may not point a provider at this host and port (SMTP); empty when it may."""
    host = str(host)
    if not host or any(c in host for c in "/?#@[] \t\r\n"):
        return ["A host name or an IP address, without scheme, port or path."]
    port = port if isinstance(port, int) and not isinstance(port, bool) else 0
    try:
        check_host(host, port or 25)
    except (UnsafeUrl, UnresolvableHost) as exc:
        return [exc.message]
    return []


class Adapter:
    name: str
    channel: Channel
    # Stored encrypted, never shown in clear, never logged.
    secret_fields: tuple[str, ...] = ()
    # Stored and shown as they are.
    option_fields: tuple[str, ...] = ()
    # A config without one of these cannot send.
    required_fields: tuple[str, ...] = ()
    # Built from the operator's environment: connections skip the egress guard (see the module doc).
    trusted: bool = False

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return (*cls.option_fields, *cls.secret_fields)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, trusted: bool = False) -> Self:
        known = set(cls.fields())
        adapter = cls(**{k: v for k, v in config.items() if k in known and v not in (None, "")})
        adapter.trusted = trusted
        return adapter

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
        """Errors per field of a tenant's config, beyond presence: formats, and where the provider
        may be reached (`url_problems`, `host_problems`); overridden where there is something to check."""
        return {}

    def send(self, message: Message) -> SendResult:
        raise NotImplementedError

    def check(self) -> Health | None:
        """A cheap live probe, where the provider has one; None means "no probe"."""
        return None
