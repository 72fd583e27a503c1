"""Writes: provider configs (create, change, delete), the test send, and what comes back — email
engagement, unsubscribes and provider status callbacks.

Validation happens before anything is written: the provider must exist, options and secrets
may only name that provider's fields (a secret never sits among the public options), values
must have the right type, and the merged config must be complete and well-formed. Audit
entries name the secret fields that changed, never their values.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from twilio.request_validator import RequestValidator

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict, NotFound
from apps.events.crypto import DecryptionFailed
from apps.observability.audit import audit_record
from apps.providers import registry, selectors
from apps.providers.adapters import Adapter
from apps.providers.base import Channel, Message, SendResult
from apps.providers.models import Engagement, ProviderConfig

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


# --- Engagement and unsubscribe (the public links in emails) --------------------------------------


def engagement_record(*, delivery_id: str, kind: str, url: str = "", now: datetime | None = None) -> bool:
    """Counts an open or a click of a delivery; False (nothing written) if the delivery is unknown."""
    from apps.notifications.models import Delivery
    from apps.notifications.services.announce import engagement_announce

    now = now or timezone.now()
    try:
        tenant_id = Delivery.objects.filter(pk=delivery_id).values_list("tenant_id", flat=True).first()
    except (ValueError, DjangoValidationError):
        return False
    if tenant_id is None:
        return False
    updated = Engagement.objects.filter(delivery_id=delivery_id, kind=kind, url=url).update(
        count=F("count") + 1, last_at=now
    )
    if updated:
        return True
    try:
        with transaction.atomic():
            Engagement.objects.create(
                tenant_id=tenant_id, delivery_id=delivery_id, kind=kind, url=url, first_at=now, last_at=now
            )
            engagement_announce(tenant_id=tenant_id, delivery_id=delivery_id, kind=kind, url=url)
    except IntegrityError:  # a concurrent first view won the insert (and the event): count this one
        Engagement.objects.filter(delivery_id=delivery_id, kind=kind, url=url).update(count=F("count") + 1, last_at=now)
    return True


def engagement_summary(*, tenant_id: Any, delivery_id: Any) -> dict[str, Any]:
    """A delivery's opens and clicks, as its API detail shows them."""
    opens: dict[str, Any] = {"count": 0, "first_at": None, "last_at": None}
    clicks: list[dict[str, Any]] = []
    for row in Engagement.objects.filter(tenant_id=tenant_id, delivery_id=delivery_id).order_by("first_at"):
        if row.kind == Engagement.Kind.OPEN:
            opens = {"count": row.count, "first_at": row.first_at, "last_at": row.last_at}
        else:
            clicks.append({"url": row.url, "count": row.count, "first_at": row.first_at, "last_at": row.last_at})
    return {"opens": opens, "clicks": clicks}


@transaction.atomic
def recipient_unsubscribe(*, tenant_id: str, recipient_id: str, category: str = "") -> bool:
    """One-click unsubscribe: email off for the category, or the recipient unsubscribed from everything.

    Goes through the notifications services (the preference layers, the recipient's flag);
    False if the recipient or category no longer exists. Doing it twice changes nothing more.
    """
    from apps.notifications.models import Category, Preference, Recipient
    from apps.notifications.services.preferences import preferences_replace
    from apps.notifications.services.recipients import recipient_update

    recipient = Recipient.objects.select_for_update().filter(tenant_id=tenant_id, pk=recipient_id).first()
    if recipient is None:
        return False
    if not category:
        recipient_update(recipient=recipient, data={"unsubscribed": True})
    else:
        if not Category.objects.filter(tenant_id=tenant_id, key=category).exists():
            return False
        rows = Preference.objects.filter(tenant_id=tenant_id, recipient=recipient).select_related("category")
        layers: list[dict[str, Any]] = [
            {
                "category": row.category.key if row.category else None,
                "channels": dict(row.channels or {}),
                "digest": row.digest,
                "quiet_hours_start": row.quiet_hours_start,
                "quiet_hours_end": row.quiet_hours_end,
            }
            for row in rows
        ]
        layer = next((layer for layer in layers if layer["category"] == category), None)
        if layer is None:
            layer = {"category": category, "channels": {}}
            layers.append(layer)
        layer["channels"][Channel.EMAIL.value] = False
        preferences_replace(tenant=recipient.tenant, recipient=recipient, layers=list[Mapping[str, Any]](layers))
    audit_record(
        action="recipient.unsubscribed",
        tenant=recipient.tenant,
        actor=Actor(kind="recipient", id=str(recipient.pk)),
        target=recipient,
        data={"category": category or "*", "via": "list-unsubscribe"},
    )
    return True


# --- Provider status callbacks ------------------------------------------------------------------

# Twilio's final message statuses, and the delivery status each one moves a `sent` delivery to.
# `sent` and earlier: Twilio has the message (settles an `unknown` send whose answer was lost).
TWILIO_FINAL_STATUSES = {
    "accepted": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "failed",
    "failed": "failed",
}


def _twilio_auth_tokens(*, tenant_id: Any, account_sid: str) -> list[str]:
    """The auth tokens that may have signed a callback for this account: the tenant's, then the environment's."""
    tokens = []
    for row in ProviderConfig.objects.filter(tenant_id=tenant_id, provider="twilio"):
        if row.options.get("account_sid") == account_sid:
            with suppress(DecryptionFailed):
                tokens.append(str(row.secrets().get("auth_token") or ""))
    if account_sid == settings.TWILIO_ACCOUNT_SID:
        tokens.append(settings.TWILIO_AUTH_TOKEN)
    return [token for token in tokens if token]


def twilio_status_record(
    *, url: str, params: Mapping[str, str], signature: str, delivery_id: str, now: datetime | None = None
) -> bool:
    """Moves an SMS delivery forward to `delivered` or `failed` from Twilio's signed status callback.

    Returns False when the signature does not verify (nothing changes). Statuses only move
    forward (`apps.notifications.services.callbacks`): a callback that arrives late or twice
    finds nothing to change. An error code that condemns the number (STOP, invalid, landline,
    blocked) puts it on the tenant's suppression list.
    """
    from apps.notifications.models import Delivery
    from apps.notifications.services.callbacks import delivery_report
    from apps.notifications.services.suppressions import TWILIO_CALLBACK_CODES, suppression_add

    try:
        delivery = Delivery.objects.filter(pk=delivery_id, channel=Channel.SMS).first()
    except (ValueError, DjangoValidationError):
        delivery = None
    account_sid = str(params.get("AccountSid", ""))
    tokens = _twilio_auth_tokens(tenant_id=delivery.tenant_id if delivery else None, account_sid=account_sid)
    if not any(RequestValidator(token).validate(url, dict(params), signature) for token in tokens):
        return False
    status = TWILIO_FINAL_STATUSES.get(str(params.get("MessageStatus", "")))
    message_sid = str(params.get("MessageSid", ""))
    if delivery is None or status is None:
        return True
    if delivery.provider_message_id and delivery.provider_message_id != message_sid:
        return True  # about a message of an earlier attempt, not the one this delivery settled on
    now = now or timezone.now()
    if status in ("sent", "delivered"):
        delivery_report(
            delivery_id=delivery.pk, status=status, provider="twilio", provider_message_id=message_sid, at=now
        )
        return True
    code = str(params.get("ErrorCode") or params.get("MessageStatus"))
    delivery_report(
        delivery_id=delivery.pk,
        status="failed",
        provider="twilio",
        provider_message_id=message_sid,
        error_code=code,
        detail=f"Twilio reported the message {params.get('MessageStatus')} ({code}).",
        at=now,
    )
    reason = TWILIO_CALLBACK_CODES.get(code)
    if reason:
        suppression_add(
            tenant_id=delivery.tenant_id,
            channel=Channel.SMS,
            address=params.get("To") or "",
            reason=reason,
            source=f"twilio:{code}",
            detail=f"Twilio status callback: {params.get('MessageStatus')} ({code}).",
            delivery_id=delivery.pk,
        )
    return True
