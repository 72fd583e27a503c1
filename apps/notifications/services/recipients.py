"""Recipients (one, or thousands per call by upsert), their push devices, topics and memberships."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.core import crypto
from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError
from apps.core.signing import secret_generate
from apps.notifications import conf, selectors
from apps.notifications.models import Device, Recipient, Topic, TopicMembership
from apps.notifications.validators import (
    messages,
    refuse_internal_chat_hook,
    validate_email,
    validate_external_id,
    validate_locale,
    validate_object,
    validate_outbound_url,
    validate_phone,
    validate_timezone,
)
from apps.observability.audit import audit_record


def _validate_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 200:
        raise ValidationError("At most 200 characters.")
    return value


def _validate_chat(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 500:
        raise ValidationError("At most 500 characters.")
    return refuse_internal_chat_hook(value)


def _validate_flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("Must be true or false.")
    return value


# Writable recipient attributes and how each is checked; `unsubscribed` maps to unsubscribed_at.
RECIPIENT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "external_id": validate_external_id,
    "name": _validate_name,
    "email": validate_email,
    "phone": validate_phone,
    "locale": validate_locale,
    "timezone": validate_timezone,
    "chat_address": _validate_chat,
    "webhook_url": validate_outbound_url,
    "data": validate_object,
    "unsubscribed": _validate_flag,
}


def recipient_clean(data: Any, *, require_external_id: bool = True) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(normalized attributes, field errors) for one recipient given as a JSON object."""
    if not isinstance(data, Mapping):
        return {}, {"non_field_errors": ["Must be an object."]}
    clean: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in sorted(set(data) - set(RECIPIENT_FIELDS)):
        errors[name] = ["Unknown field."]
    for name, check in RECIPIENT_FIELDS.items():
        if name not in data:
            continue
        try:
            clean[name] = check(data[name])
        except ValidationError as exc:
            errors[name] = messages(exc)
    if require_external_id and "external_id" not in data:
        errors["external_id"] = ["This field is required."]
    return clean, errors


def _model_values(clean: Mapping[str, Any], now: Any) -> dict[str, Any]:
    values = {k: v for k, v in clean.items() if k != "unsubscribed"}
    if "unsubscribed" in clean:
        values["unsubscribed_at"] = now if clean["unsubscribed"] else None
    return values


def recipients_upsert(*, tenant: Any, items: Sequence[Any]) -> dict[str, int]:
    """Creates or updates recipients by external_id with one INSERT … ON CONFLICT per field set.

    Fields an item leaves out keep their stored value. Returns `{"created": n, "updated": m}`.
    Refuses the whole call (field errors keyed by item index) if any item is invalid.
    """
    limit = conf.get().MAX_BULK_UPSERT
    if len(items) > limit:
        raise ApplicationError(
            f"At most {limit} recipients per call.", code="too_many_recipients", fields={"recipients": ["Too many."]}
        )
    cleaned: list[dict[str, Any]] = []
    errors: dict[str, Any] = {}
    seen: set[str] = set()
    for index, item in enumerate(items):
        clean, item_errors = recipient_clean(item)
        if clean.get("external_id") in seen:
            item_errors["external_id"] = ["Listed twice in this call."]
        seen.add(clean.get("external_id", ""))
        if item_errors:
            errors[str(index)] = item_errors
        cleaned.append(clean)
    if errors:
        raise ApplicationError(
            "Some recipients are invalid; see fields.", code="validation_error", fields={"recipients": errors}
        )
    return recipients_write(tenant=tenant, cleaned=cleaned)


def recipients_write(*, tenant: Any, cleaned: list[dict[str, Any]]) -> dict[str, int]:
    """Creates or updates already-cleaned recipients (`recipient_clean`) by external id, in bulk;
    the counts of each. Shared by the bulk endpoint, inline recipients and the import's SQLite path."""
    now = timezone.now()
    ids = [c["external_id"] for c in cleaned]
    existing = set(Recipient.objects.filter(tenant=tenant, external_id__in=ids).values_list("external_id", flat=True))
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for clean in cleaned:
        values = _model_values(clean, now)
        groups.setdefault(frozenset(values), []).append(values)
    with transaction.atomic():
        for keys, rows in groups.items():
            objs = [Recipient(tenant=tenant, **values) for values in rows]
            update_fields = sorted(keys - {"external_id"})
            if update_fields:
                Recipient.objects.bulk_create(
                    objs,
                    update_conflicts=True,
                    unique_fields=["tenant", "external_id"],
                    update_fields=[*update_fields, "updated_at"],
                    batch_size=1000,
                )
            else:
                Recipient.objects.bulk_create(objs, ignore_conflicts=True, batch_size=1000)
    return {"created": len(set(ids) - existing), "updated": len(existing)}


def recipient_create(*, tenant: Any, data: Mapping[str, Any]) -> Recipient:
    clean, errors = recipient_clean(data)
    if errors:
        raise ApplicationError("The recipient is invalid; see fields.", code="validation_error", fields=errors)
    if Recipient.objects.filter(tenant=tenant, external_id=clean["external_id"]).exists():
        raise ApplicationError(
            "A recipient with this external_id exists; update it instead.",
            code="recipient_exists",
            status_code=409,
            fields={"external_id": ["Already exists."]},
        )
    return Recipient.objects.create(tenant=tenant, **_model_values(clean, timezone.now()))


def recipient_update(*, recipient: Recipient, data: Mapping[str, Any]) -> Recipient:
    clean, errors = recipient_clean(data, require_external_id=False)
    if "external_id" in clean and clean["external_id"] != recipient.external_id:
        errors["external_id"] = ["The external_id of a recipient cannot change."]
    if errors:
        raise ApplicationError("The recipient is invalid; see fields.", code="validation_error", fields=errors)
    values = _model_values(clean, timezone.now())
    if "unsubscribed_at" in values and values["unsubscribed_at"] and recipient.unsubscribed_at:
        values["unsubscribed_at"] = recipient.unsubscribed_at  # keep when they first unsubscribed
    for name, value in values.items():
        setattr(recipient, name, value)
    recipient.save()
    return recipient


@transaction.atomic
def recipient_webhook_secret_set(*, recipient: Recipient, actor: Actor = SYSTEM) -> str:
    """Gives the recipient a signing secret of its own for the webhook channel and returns it (the
    only time it is shown). Until then its webhooks are signed with the provider's secret, which
    every receiver of the tenant shares, so one receiver could sign messages to another."""
    secret = secret_generate()
    recipient.webhook_secret_encrypted = crypto.encrypt(secret)
    recipient.save(update_fields=["webhook_secret_encrypted", "updated_at"])
    audit_record(action="recipient.webhook_secret_set", tenant=recipient.tenant, actor=actor, target=recipient)
    return secret


@transaction.atomic
def recipient_webhook_secret_clear(*, recipient: Recipient, actor: Actor = SYSTEM) -> None:
    """Back to the provider's secret."""
    recipient.webhook_secret_encrypted = ""
    recipient.save(update_fields=["webhook_secret_encrypted", "updated_at"])
    audit_record(action="recipient.webhook_secret_cleared", tenant=recipient.tenant, actor=actor, target=recipient)


def recipient_webhook_secret(encrypted: str) -> str:
    """The clear secret of a recipient's `webhook_secret_encrypted`; "" when it has none or it
    was encrypted with a key no longer configured (the provider's secret then signs)."""
    if not encrypted:
        return ""
    try:
        return crypto.decrypt(encrypted)
    except crypto.DecryptionFailed:
        return ""


def recipients_resolve(*, tenant: Any, external_ids: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """({external_id: pk}, unknown external ids) in one query."""
    found = selectors.recipient_ids_by_external_id(tenant_id=getattr(tenant, "pk", tenant), external_ids=external_ids)
    return found, [e for e in dict.fromkeys(external_ids) if e not in found]


# --- Devices ------------------------------------------------------------------------------------


def device_register(*, recipient: Recipient, platform: str, token: str) -> Device:
    """Registers a push token for a recipient; a token seen before moves here and is reactivated."""
    if platform not in Device.Platform.values:
        raise ApplicationError(
            "Unknown platform.",
            code="validation_error",
            fields={"platform": [f"Choose from {Device.Platform.values}."]},
        )
    if not token or len(token) > 512:
        raise ApplicationError("Invalid token.", code="validation_error", fields={"token": ["1-512 characters."]})
    device, _ = Device.objects.update_or_create(
        tenant_id=recipient.tenant_id,
        token=token,
        defaults={"recipient": recipient, "platform": platform, "active": True, "deactivated_reason": ""},
    )
    return device


def device_deactivate(*, device: Device, reason: str = "unregistered") -> Device:
    Device.objects.filter(pk=device.pk).update(active=False, deactivated_reason=reason, updated_at=timezone.now())
    device.refresh_from_db()
    return device


def devices_deactivate_tokens(*, tenant_id: Any, tokens: Sequence[str], reason: str) -> int:
    """Providers report dead tokens; they stop receiving pushes from now on."""
    if not tokens:
        return 0
    return Device.objects.filter(tenant_id=tenant_id, token__in=tokens, active=True).update(
        active=False, deactivated_reason=reason, updated_at=timezone.now()
    )


# --- Topics -------------------------------------------------------------------------------------


def topic_subscribe(*, topic: Topic, external_ids: Sequence[str]) -> int:
    """Adds recipients to a topic (already subscribed ones are left alone); unknown ids refuse the call."""
    found, unknown = recipients_resolve(tenant=topic.tenant_id, external_ids=external_ids)
    if unknown:
        raise ApplicationError(
            "Some recipients do not exist.",
            code="unknown_recipients",
            fields={"recipients": [f"Unknown: {', '.join(unknown[:20])}{' …' if len(unknown) > 20 else ''}"]},
        )
    before = TopicMembership.objects.filter(topic=topic).count()
    TopicMembership.objects.bulk_create(
        [TopicMembership(topic=topic, recipient_id=pk) for pk in found.values()], ignore_conflicts=True, batch_size=2000
    )
    return TopicMembership.objects.filter(topic=topic).count() - before


def topic_unsubscribe(*, topic: Topic, external_ids: Sequence[str]) -> int:
    deleted, _ = TopicMembership.objects.filter(
        topic=topic, recipient__tenant_id=topic.tenant_id, recipient__external_id__in=set(external_ids)
    ).delete()
    return deleted
