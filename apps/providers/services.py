"""Writes: provider configs (create, change, delete) and the test send. What comes back from
providers and recipients (status callbacks, opens, clicks, unsubscribes) is applied by the
notifications app, beside the deliveries it updates (apps/notifications/public.py).

Validation happens before anything is written: the provider must exist, options and secrets
may only name that provider's fields (a secret never sits among the public options), values
must have the right type, and the merged config must be complete and well-formed. Audit
entries name the secret fields that changed, never their values.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict, NotFound
from apps.observability.audit import audit_record
from apps.providers import registry, selectors
from apps.providers.adapters import Adapter
from apps.providers.base import Channel, Message, SendResult
from apps.providers.models import ProviderConfig

# Options whose type is not "a string".
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "port": (int,),
    "timeout": (int, float),
    "use_tls": (bool,),
    "use_ssl": (bool,),
}


def _invalid(fields: dict[str, Any], message: str = "The provider config is invalid; see fields.") -> ApplicationError:
    return ApplicationError(message, code="validation_error", fields=fields)


def _adapter_class(provider: str) -> type[Adapter]:
    cls = registry.ADAPTERS.get(provider)
    if cls is None:
        raise _invalid({"provider": [f"Choose from {', '.join(sorted(registry.ADAPTERS))}."]}, "Unknown provider.")
    return cls


def _merge(current: Mapping[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """`changes` over `current`; a null value removes the key."""
    merged = dict(current)
    for key, value in (changes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _option_problem(key: str, value: Any) -> str:
    types = OPTION_TYPES.get(key, (str,))
    # bool is an int to Python, not to a config.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return "Wrong type."
    number = float(value) if isinstance(value, int | float) else 0.0
    if key == "timeout" and not 0 < number <= 60:
        return "Seconds, at most 60."
    if key == "port" and not 0 < number < 65536:
        return "A TCP port."
    return ""


def _check_fields(cls: type[Adapter], options: Mapping[str, Any], secrets: Mapping[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    for key, value in options.items():
        if key in cls.secret_fields:
            errors[f"options.{key}"] = ["This is a secret: give it in `secrets`."]
        elif key not in cls.option_fields:
            errors[f"options.{key}"] = [f"Unknown option; {cls.name} takes {', '.join(cls.option_fields)}."]
        elif problem := _option_problem(key, value):
            errors[f"options.{key}"] = [problem]
    for key, value in secrets.items():
        if key not in cls.secret_fields:
            errors[f"secrets.{key}"] = [f"Unknown secret; {cls.name} takes {', '.join(cls.secret_fields) or 'none'}."]
        elif not isinstance(value, str):
            errors[f"secrets.{key}"] = ["A string."]
    if errors:
        raise _invalid(errors)
    config = {**options, **secrets}
    for name in cls.missing(config):
        errors[name.replace("|", " or ")] = ["Required."]
    errors.update(cls.validate_config(config))
    if errors:
        raise _invalid(errors)


@transaction.atomic
def provider_config_create(
    *,
    tenant: Any,
    name: str,
    provider: str,
    priority: int = 100,
    enabled: bool = True,
    options: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    actor: Actor = SYSTEM,
) -> ProviderConfig:
    cls = _adapter_class(provider)
    options, secrets = _merge({}, options), _merge({}, secrets)
    _check_fields(cls, options, secrets)
    config = ProviderConfig(tenant=tenant, name=name, provider=provider, priority=priority, enabled=enabled)
    config.options = options
    config.set_secrets(secrets)
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError as exc:
        raise Conflict(f"A provider config named {name!r} exists.", code="provider_config_exists") from exc
    audit_record(
        action="provider_config.created",
        tenant=tenant,
        actor=actor,
        target=config,
        data={"name": name, "provider": provider, "secrets_set": sorted(secrets)},
    )
    return config


@transaction.atomic
def provider_config_update(
    *,
    config: ProviderConfig,
    name: str | None = None,
    priority: int | None = None,
    enabled: bool | None = None,
    options: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    actor: Actor = SYSTEM,
) -> ProviderConfig:
    """Changes what is given; `options` and `secrets` merge key by key (null removes a key)."""
    config = ProviderConfig.objects.select_for_update().get(pk=config.pk)
    cls = _adapter_class(config.provider)
    new_options = _merge(config.options, options)
    new_secrets = _merge(config.secrets(), secrets)
    _check_fields(cls, new_options, new_secrets)
    if name is not None:
        config.name = name
    if priority is not None:
        config.priority = priority
    if enabled is not None:
        config.enabled = enabled
    config.options = new_options
    if secrets:
        config.set_secrets(new_secrets)
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError as exc:
        raise Conflict(f"A provider config named {config.name!r} exists.", code="provider_config_exists") from exc
    audit_record(
        action="provider_config.updated",
        tenant=config.tenant,
        actor=actor,
        target=config,
        data={
            "changed": sorted(
                k for k, v in (("name", name), ("priority", priority), ("enabled", enabled)) if v is not None
            ),
            "options_changed": sorted(options or {}),
            "secrets_changed": sorted(secrets or {}),
        },
    )
    return config


@transaction.atomic
def provider_config_delete(*, config: ProviderConfig, actor: Actor = SYSTEM) -> None:
    audit_record(
        action="provider_config.deleted",
        tenant=config.tenant,
        actor=actor,
        target=config,
        data={"name": config.name, "provider": config.provider},
    )
    config.delete()


# --- Test send -------------------------------------------------------------------------------------

TEST_SUBJECT = "Signalbox test message"
TEST_TEXT = "This is a test message from Signalbox: the provider is configured and accepted it."


def _resolve(*, tenant: Any, ref: str) -> tuple[str, Adapter]:
    """(provider name, adapter) for a tenant config (id or name) or an environment provider name."""
    row = selectors.provider_config_get(tenant=tenant, ref=ref)
    if row is not None:
        adapter = registry.from_row(row)
        if adapter is None:
            raise ApplicationError(
                "This provider config cannot be used (incomplete, or its secrets cannot be decrypted).",
                code="provider_not_configured",
            )
        return row.provider, adapter
    if ref in registry.ADAPTERS:
        config = registry.environment_config(ref)
        if registry.ADAPTERS[ref].missing(config):
            raise ApplicationError(f"{ref} is not configured in the environment.", code="provider_not_configured")
        return ref, registry.build(ref, config, trusted=True)
    raise NotFound("No such provider config or provider.", code="not_found")


def build_test_message(*, tenant: Any, channel: Channel, to: Any, subject: str, text: str) -> Message:
    return Message(
        channel=channel,
        to=to,
        idempotency_key=f"test-{uuid.uuid4()}",
        tenant_id=str(tenant.pk),
        subject=subject,
        title=subject,
        text=text,
        html=f"<p>{text}</p>" if channel is Channel.EMAIL else "",
        data={"subject": subject, "text": text, "test": True} if channel is Channel.WEBHOOK else {},
    )


def provider_test_send(
    *, tenant: Any, ref: str, to: Any, subject: str = TEST_SUBJECT, text: str = TEST_TEXT, actor: Actor = SYSTEM
) -> tuple[str, SendResult]:
    """Sends one test message through a provider, outside any notification, and returns its result."""
    name, adapter = _resolve(tenant=tenant, ref=ref)
    if adapter.channel is Channel.PUSH and isinstance(to, str):
        to = [to]
    result = adapter.send(build_test_message(tenant=tenant, channel=adapter.channel, to=to, subject=subject, text=text))
    audit_record(
        action="provider.tested",
        tenant=tenant,
        actor=actor,
        target_type="providers.provider",
        target_id=ref,
        data={"provider": name, "outcome": str(result.outcome), "code": result.code},
    )
    return name, result
