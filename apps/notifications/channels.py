"""The channel registry: which adapter(s) carry each channel, and how a delivery becomes a `Message`.

Every channel goes through one interface (`apps.providers.base.Provider`: `send(Message) ->
SendResult`). Which adapters, in what order, comes from settings, so the providers app plugs
in without editing this code:

    SIGNALBOX_CHANNEL_PROVIDERS = {
        "email": ["apps.providers.email.SendGridProvider", "apps.providers.email.SmtpProvider"],
        "sms": ["apps.providers.sms.TwilioProvider"],
    }

Entries are import paths (a class, instantiated once per process with no arguments, or an
instance) or the name of a built-in adapter (`in_app`, `sink`, `recording_sink`). A channel not
listed uses `in_app` for in_app and `sink` for the others. `SIGNALBOX_EXTRA_PROVIDERS` lists
further adapters that are available by name without being in a default chain.

`SIGNALBOX_CHANNEL_CHAIN_RESOLVER` names a callable `(tenant=, channel=) -> list[Provider]`
(the providers app's `apps.providers.registry.provider_chain`: a tenant's own provider
configs, else the environment's); when it answers an empty list, the chain above applies.

Precedence for one tenant and channel: `Tenant.settings["channel_providers"][channel]` (names
of available adapters, e.g. `["recording_sink"]` for a test tenant; it never names code), then
the resolver, then `SIGNALBOX_CHANNEL_PROVIDERS`, then the built-in default. The chain is
ordered: attempt 1 uses the first adapter, a retry the next one (`provider_for_attempt`).

A recipient with no address on a channel is suppressed (`no_address`) unless the chain has a
default destination (`serves_without_address`): a chat adapter whose `has_default_destination`
is true (Slack's default channel or webhook, a Teams/Discord config's webhook URL) posts there.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from apps.notifications import conf
from apps.providers.base import Channel, Message, Provider

log = logging.getLogger(__name__)

BUILTIN_ADAPTERS = {
    "in_app": "apps.notifications.adapters.InAppAdapter",
    "sink": "apps.notifications.adapters.SinkAdapter",
    "recording_sink": "apps.notifications.adapters.RecordingSinkAdapter",
}


def _instantiate(entry: str) -> Provider:
    path = BUILTIN_ADAPTERS.get(entry, entry)
    try:
        obj = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Channel provider {entry!r} cannot be imported: {exc}") from exc
    adapter = obj() if isinstance(obj, type) else obj
    if not callable(getattr(adapter, "send", None)) or not getattr(adapter, "name", ""):
        raise ImproperlyConfigured(f"Channel provider {entry!r} needs a `name` and a `send(message)` method.")
    return adapter  # type: ignore[no-any-return]


def _configured_chains() -> dict[str, list[str]]:
    raw = conf.wiring().channel_providers
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured("SIGNALBOX_CHANNEL_PROVIDERS must map channel -> list of providers.")
    unknown = sorted(set(raw) - {c.value for c in Channel})
    if unknown:
        raise ImproperlyConfigured(f"SIGNALBOX_CHANNEL_PROVIDERS names unknown channels: {', '.join(unknown)}.")
    chains: dict[str, list[str]] = {}
    for channel in Channel:
        entries = raw.get(channel.value) or ["in_app" if channel is Channel.IN_APP else "sink"]
        if isinstance(entries, str) or not isinstance(entries, Sequence):
            raise ImproperlyConfigured(f"SIGNALBOX_CHANNEL_PROVIDERS[{channel.value!r}] must be a list.")
        chains[channel.value] = list(entries)
    return chains


@functools.cache
def _registry() -> tuple[dict[str, Provider], dict[str, list[Provider]]]:
    """(every available adapter by name, the default chain per channel); built once per process."""
    by_entry: dict[str, Provider] = {}
    extra = list(conf.wiring().extra_providers)
    chains = _configured_chains()
    for entry in [*BUILTIN_ADAPTERS, *extra, *(e for entries in chains.values() for e in entries)]:
        if entry not in by_entry:
            by_entry[entry] = _instantiate(entry)
    by_name = {adapter.name: adapter for adapter in by_entry.values()}
    defaults = {channel: [by_entry[e] for e in entries] for channel, entries in chains.items()}
    return by_name, defaults


def reset() -> None:
    """Forgets the built registry (tests that change settings call this)."""
    _registry.cache_clear()
    _resolver.cache_clear()


def available() -> dict[str, Provider]:
    return dict(_registry()[0])


@functools.cache
def _resolver() -> Callable[..., Sequence[Provider]] | None:
    path = conf.wiring().chain_resolver
    if not path:
        return None
    try:
        return import_string(path)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ImproperlyConfigured(f"SIGNALBOX_CHANNEL_CHAIN_RESOLVER {path!r} cannot be imported: {exc}") from exc


def chain_for(channel: str, tenant: Any = None) -> list[Provider]:
    """The ordered adapters for a tenant's channel (see the module docstring for precedence).

    Callers resolve it once per batch and channel: the resolver may read the database.
    """
    by_name, defaults = _registry()
    tenant_settings = getattr(tenant, "settings", None) or {}
    wanted = (tenant_settings.get("channel_providers") or {}).get(channel)
    if wanted:
        chosen = [by_name[name] for name in wanted if name in by_name]
        missing = [name for name in wanted if name not in by_name]
        if missing:
            log.error("tenant names unavailable channel providers", extra={"channel": channel, "missing": missing})
        if chosen:
            return chosen
    resolver = _resolver()
    if resolver is not None and tenant is not None:
        resolved = list(resolver(tenant=tenant, channel=channel))
        if resolved:
            return resolved
    return defaults[channel]


def provider_for_attempt(chain: Sequence[Provider], attempt: int) -> Provider:
    """Attempt 1 goes to the first adapter; each retry moves on to the next (failover), wrapping."""
    return chain[(max(attempt, 1) - 1) % len(chain)]


def adapter_flag(adapter: Any, flag: str, default: bool) -> bool:
    return bool(getattr(adapter, flag, default))


# --- Addresses and messages -------------------------------------------------------------------

# Channels whose adapters may have a default destination; others are not asked (the resolver may
# read the database).
DEFAULT_DESTINATION_CHANNELS = frozenset({Channel.CHAT.value})


def has_default_destination(channel: str, chain: Sequence[Any]) -> bool:
    """Whether an adapter of this (already resolved) chain has a default destination on the channel."""
    return channel in DEFAULT_DESTINATION_CHANNELS and any(
        adapter_flag(adapter, "has_default_destination", False) for adapter in chain
    )


def serves_without_address(channel: str, tenant: Any = None) -> bool:
    """Whether the tenant's chain for the channel can send to a recipient with no address there.

    Resolves the chain (only for channels that can have a default), so callers ask once per
    chunk, tenant and channel, never per recipient; a caller holding the chain asks
    `has_default_destination`.
    """
    return channel in DEFAULT_DESTINATION_CHANNELS and has_default_destination(channel, chain_for(channel, tenant))


# The recipient column `address_for` reads on each channel (push reads the devices instead).
ADDRESS_FIELDS = {
    Channel.EMAIL: "email",
    Channel.SMS: "phone",
    Channel.IN_APP: "external_id",
    Channel.CHAT: "chat_address",
    Channel.WEBHOOK: "webhook_url",
}


def address_for(channel: str, recipient: Any, device_tokens: Sequence[str] = ()) -> Any:
    """The recipient's address on a channel, or None/"" when there is none."""
    if channel == Channel.EMAIL:
        return recipient.email
    if channel == Channel.SMS:
        return recipient.phone
    if channel == Channel.PUSH:
        return list(device_tokens)
    if channel == Channel.IN_APP:
        return recipient.external_id
    if channel == Channel.CHAT:
        return recipient.chat_address
    if channel == Channel.WEBHOOK:
        return recipient.webhook_url
    raise ValueError(f"unknown channel {channel!r}")


def message_build(
    *,
    delivery_id: str,
    tenant_id: str,
    channel: str,
    to: Any,
    rendered: Mapping[str, Any],
    metadata: Mapping[str, Any],
    recipient_id: Any = None,
    email: Mapping[str, Any] | None = None,
    signing_secret: str = "",
) -> Message:
    """A provider-ready Message from a delivery's rendered content (`rendered["content"]`);
    an email also takes the notification's `email_options` and the recipient (for unsubscribing),
    a webhook the recipient's own signing secret."""
    content = rendered.get("content", {})
    kind = Channel(channel)
    kwargs: dict[str, Any] = {}
    if kind is Channel.EMAIL:
        kwargs = {
            "subject": content.get("subject", ""),
            "text": content.get("text", ""),
            "html": content.get("html", ""),
            **(email or {}),
            "recipient_id": str(recipient_id) if recipient_id is not None else "",
        }
    elif kind in (Channel.SMS, Channel.CHAT):
        kwargs = {"text": content.get("text", "")}
    elif kind is Channel.PUSH:
        kwargs = {"title": content.get("title", ""), "text": content.get("body", ""), "data": content.get("data", {})}
    elif kind is Channel.IN_APP:
        data = dict(content.get("data") or {})
        if content.get("action_url"):
            data["action_url"] = content["action_url"]
        kwargs = {"title": content.get("title", ""), "text": content.get("body", ""), "data": data}
    elif kind is Channel.WEBHOOK:
        kwargs = {"data": content.get("body", {}), "signing_secret": signing_secret}
    return Message(
        channel=kind, to=to, idempotency_key=delivery_id, tenant_id=tenant_id, metadata=dict(metadata), **kwargs
    )
