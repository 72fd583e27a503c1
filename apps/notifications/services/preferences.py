"""Preferences: the layers a recipient's effective choice is merged from, quiet hours, and their writes.

Layers merge from general to specific: tenant default for all categories, tenant default for
the category, the recipient for all categories, the recipient for the category. A field left
empty in a layer inherits from the one before; `channels` merges key by key. With no layer at
all, every channel is on, delivery is immediate and there are no quiet hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import transaction
from django.db.models import F, Q

from apps.core.errors import ApplicationError, Unprocessable
from apps.notifications.models import Category, Digest, Preference, Recipient
from apps.notifications.services.recipients import recipient_update
from apps.providers.base import Channel

# A recipient's layer may not turn a channel off for a critical category (fan-out ignores it anyway;
# refusing says so instead of storing a choice that does nothing).
CRITICAL_LOCKED = "critical_category_locked"

# Channels that interrupt someone (a sound, a buzz): quiet hours and digests apply to these.
# The in-app inbox and machine webhooks are never deferred.
INTERRUPTING_CHANNELS = frozenset({Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.CHAT})


@dataclass(frozen=True)
class EffectivePreference:
    channels: Mapping[str, bool] = field(default_factory=dict)
    digest: str = Digest.IMMEDIATE
    quiet_hours_start: time | None = None
    quiet_hours_end: time | None = None

    def channel_enabled(self, channel: str) -> bool:
        return bool(self.channels.get(channel, True))

    @property
    def has_quiet_hours(self) -> bool:
        return (
            self.quiet_hours_start is not None
            and self.quiet_hours_end is not None
            and self.quiet_hours_start != self.quiet_hours_end
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": {c.value: self.channel_enabled(c.value) for c in Channel},
            "digest": self.digest,
            "quiet_hours": (
                {"start": self.quiet_hours_start.isoformat("minutes"), "end": self.quiet_hours_end.isoformat("minutes")}
                if self.has_quiet_hours and self.quiet_hours_start and self.quiet_hours_end
                else None
            ),
        }


def preference_merge(layers: Iterable[Any]) -> EffectivePreference:
    """Merges Preference rows (or look-alikes) given from the most general to the most specific."""
    channels: dict[str, bool] = {}
    digest = Digest.IMMEDIATE.value
    start: time | None = None
    end: time | None = None
    for layer in layers:
        if layer is None:
            continue
        channels.update({k: bool(v) for k, v in (layer.channels or {}).items()})
        if layer.digest:
            digest = layer.digest
        if layer.quiet_hours_start is not None and layer.quiet_hours_end is not None:
            start, end = layer.quiet_hours_start, layer.quiet_hours_end
    return EffectivePreference(channels=channels, digest=digest, quiet_hours_start=start, quiet_hours_end=end)


class PreferenceIndex:
    """Effective preferences for many recipients of one category, from rows loaded in one query."""

    def __init__(self, rows: Iterable[Preference], category_id: int | None) -> None:
        self.category_id = category_id
        self._tenant: dict[int | None, Preference] = {}
        self._recipient: dict[tuple[int, int | None], Preference] = {}
        for row in rows:
            if row.recipient_id is None:
                self._tenant[row.category_id] = row
            else:
                self._recipient[(row.recipient_id, row.category_id)] = row
        self._default = preference_merge([self._tenant.get(None), self._tenant.get(category_id)])
        self._cache: dict[int, EffectivePreference] = {}

    def for_recipient(self, recipient_id: int) -> EffectivePreference:
        if recipient_id not in self._cache:
            own = (self._recipient.get((recipient_id, None)), self._recipient.get((recipient_id, self.category_id)))
            self._cache[recipient_id] = (
                self._default
                if own == (None, None)
                else preference_merge([self._tenant.get(None), self._tenant.get(self.category_id), *own])
            )
        return self._cache[recipient_id]


def zone(name: str) -> ZoneInfo:
    """The recipient's zone; an empty or unknown name is UTC (names are validated on write)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant the local wall time `day at` first happens in `tz`.

    Ambiguous (clocks fell back over it): its first occurrence. Non-existent (clocks sprang
    forward over it): the instant of the jump, the first moment local clocks read `at` or later.
    """
    wall = datetime.combine(day, at)
    instant = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the offset before a change
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # In a gap, fold=1 maps with the offset after the jump (an instant before it) and fold=0 with
    # the offset before (an instant after it); bisect between them to the second.
    low, high = wall.replace(tzinfo=tz, fold=1).astimezone(UTC), instant
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def quiet_hours_until(*, now: datetime, tz: ZoneInfo, start: time, end: time) -> datetime | None:
    """If `now` falls in the daily local window [start, end), the UTC instant the window ends.

    The window may wrap midnight (22:00-07:00). The end is a local wall time on the right local
    date, converted only then, so DST changes inside the window are honoured (07:00 local is
    07:00 local, whether the night was 23 or 25 hours long). An end the clocks skip (02:30 on a
    spring-forward night) is the moment they jump; an end they pass twice (01:30 on a fall-back
    night) is the next of its two occurrences.
    """
    if start == end:
        return None
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        if not (start <= clock < end):
            return None
        end_date = local.date()
    else:
        if not (clock >= start or clock < end):
            return None
        end_date = local.date() if clock < end else local.date() + timedelta(days=1)
    until = local_instant(end_date, end, tz)
    if until <= now:  # in the second pass of a repeated hour: the window ends at its second end
        until = datetime.combine(end_date, end, tzinfo=tz).replace(fold=1).astimezone(UTC)
    return until if until > now else None


# --- Writes -------------------------------------------------------------------------------------


def preference_layer_errors(data: Mapping[str, Any]) -> dict[str, Any]:
    """What is wrong with one preference layer (channels, digest), by field; empty when valid."""
    errors: dict[str, Any] = {}
    channels = data.get("channels") or {}
    if not isinstance(channels, Mapping):
        errors["channels"] = ["Must map channel -> true/false."]
    else:
        bad = sorted(set(channels) - {c.value for c in Channel})
        if bad:
            errors["channels"] = [f"Unknown channel(s): {', '.join(bad)}."]
        elif any(not isinstance(v, bool) for v in channels.values()):
            errors["channels"] = ["Values must be true or false."]
    if data.get("digest") not in (None, "", *Digest.values):
        errors["digest"] = [f"Choose from {', '.join(Digest.values)}."]
    return errors


def _turns_off_critical(recipient: Recipient | None, category: Category | None, layer: Mapping[str, Any]) -> bool:
    if recipient is None or category is None or not category.critical:
        return False
    return any(on is False for on in (layer.get("channels") or {}).values())


@transaction.atomic
def preferences_replace(
    *, tenant: Any, recipient: Recipient | None, layers: list[Mapping[str, Any]]
) -> list[Preference]:
    """Replaces every preference row of a recipient (or the tenant defaults when `recipient` is None).

    Each layer: `{"category": key or None, "channels": {...}, "digest": ..., "quiet_hours_start",
    "quiet_hours_end"}` with times already parsed. A malformed layer is 400; a well-formed one naming a
    category the tenant does not have is 422 (the schema cannot know the tenant's categories).
    """
    keys = {layer.get("category") for layer in layers} - {None}
    categories = {c.key: c for c in Category.objects.filter(tenant=tenant, key__in=keys)}
    errors: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    locked: dict[str, Any] = {}
    seen: set[str | None] = set()
    for index, layer in enumerate(layers):
        layer_errors = preference_layer_errors(layer)
        key = layer.get("category")
        if key is not None and key not in categories:
            unknown[str(index)] = {"category": [f"Unknown category {key!r}."]}
        if key in seen:
            layer_errors["category"] = ["Listed twice."]
        seen.add(key)
        if (layer.get("quiet_hours_start") is None) != (layer.get("quiet_hours_end") is None):
            layer_errors["quiet_hours"] = ["Give both start and end, or neither."]
        if layer_errors:
            errors[str(index)] = layer_errors
        elif str(index) in unknown:
            continue
        elif _turns_off_critical(recipient, categories.get(key) if key else None, layer):
            locked[str(index)] = {"channels": [f"{key!r} is critical: its channels cannot be turned off."]}
    if errors:
        raise ApplicationError(
            "The preferences are invalid; see fields.", code="validation_error", fields={"preferences": errors}
        )
    if unknown:
        raise Unprocessable(
            "The preferences name unknown categories; see fields.",
            code="validation_error",
            fields={"preferences": unknown},
        )
    if locked:
        raise ApplicationError(
            "Critical categories cannot be turned off.", code=CRITICAL_LOCKED, fields={"preferences": locked}
        )
    Preference.objects.filter(tenant=tenant, recipient=recipient).delete()
    return Preference.objects.bulk_create(
        [
            Preference(
                tenant=tenant,
                recipient=recipient,
                category=categories.get(layer["category"]) if layer.get("category") else None,
                channels=dict(layer.get("channels") or {}),
                digest=layer.get("digest") or "",
                quiet_hours_start=layer.get("quiet_hours_start"),
                quiet_hours_end=layer.get("quiet_hours_end"),
            )
            for layer in layers
        ]
    )


def preferences_effective(*, tenant: Any, recipient: Recipient) -> dict[str, Any]:
    """The merged result per category (and for a category not listed), as the API shows it."""
    rows = list(Preference.objects.filter(Q(recipient=recipient) | Q(recipient__isnull=True), tenant=tenant))
    categories = list(Category.objects.filter(tenant=tenant))
    result: dict[str, Any] = {"*": PreferenceIndex(rows, None).for_recipient(recipient.pk).as_dict()}
    for category in categories:
        effective = PreferenceIndex(rows, category.pk).for_recipient(recipient.pk).as_dict()
        if category.critical:
            effective = {**effective, "critical": True}
        result[category.key] = effective
    return result


# --- The recipient's own view (API with a recipient token, the hosted page, the component) ---------


def preference_centre(*, tenant: Any, recipient: Recipient) -> dict[str, Any]:
    """What a recipient sees and edits: their layers, the tenant's categories, the merged result and
    their global unsubscribe, timezone and locale (the shape of `GET …/preferences/`)."""
    rows = (
        Preference.objects.filter(tenant=tenant, recipient=recipient)
        .select_related("category")
        .order_by(F("category__key").asc(nulls_first=True))
    )
    return {
        "preferences": [layer_out(row) for row in rows],
        "unsubscribed": recipient.unsubscribed_at is not None,
        "timezone": recipient.timezone,
        "locale": recipient.locale,
        "categories": [
            {"key": c.key, "name": c.name or c.key, "description": c.description, "critical": c.critical}
            for c in Category.objects.filter(tenant=tenant).order_by("key")
        ],
        "channels": [c.value for c in Channel],
        "effective": preferences_effective(tenant=tenant, recipient=recipient),
    }


def layer_out(row: Preference) -> dict[str, Any]:
    return {
        "category": row.category.key if row.category_id and row.category else None,
        "channels": row.channels,
        "digest": row.digest,
        "quiet_hours": (
            {"start": row.quiet_hours_start.isoformat("minutes"), "end": row.quiet_hours_end.isoformat("minutes")}
            if row.quiet_hours_start is not None and row.quiet_hours_end is not None
            else None
        ),
    }


@transaction.atomic
def preference_centre_save(
    *,
    tenant: Any,
    recipient: Recipient,
    layers: Sequence[Mapping[str, Any]],
    profile: Mapping[str, Any] | None = None,
) -> Recipient:
    """Replaces the recipient's layers and, in the same transaction, the profile fields a recipient may
    change about themselves (`unsubscribed`, `timezone`, `locale`); nothing changes if either is invalid."""
    preferences_replace(tenant=tenant, recipient=recipient, layers=list(layers))
    own = {k: v for k, v in (profile or {}).items() if k in {"unsubscribed", "timezone", "locale"}}
    return recipient_update(recipient=recipient, data=own) if own else recipient
