"""Digests, the collecting half: which window a digest-bound delivery waits in, and the rule that sends it there.

A delivery goes to a digest when its recipient prefers one (`hourly`, `daily`, `weekly`) or when
its notification carries a digest rule (`{"key", "window_minutes"}`, from the template or the
request; Novu-style: events with the same key collect for N minutes). Fan-out gives it status
`digest` and calls `digest_enqueue` in the same transaction, which files a `DigestItem` in the
open `DigestWindow` of its (recipient, channel, group), opening one if needed.

Window boundaries are wall times in the recipient's timezone (`zone(recipient.timezone)`):

- hourly: each local hour, [hh:00, hh+1:00);
- daily: from one local `daily_at` (tenant setting `digest.daily_at`, else
  `SIGNALBOX_DIGESTS["DAILY_AT"]`, 09:00) to the next;
- weekly: from one local `weekly_day` at `daily_at` to the next;
- a rule: from the first item to `window_minutes` later.

A wall time that happens twice (the repeated hour when clocks fall back) means its first
occurrence; one that does not exist (the skipped hour when clocks spring forward) means the
instant the clocks jump. Flushing (one message per window) lives in `digests_flush.py`.

Concurrency: the windows a chunk needs are taken under transaction-scoped advisory locks (one per
recipient, channel and group, in a fixed order) and read `FOR UPDATE`, so two chunks never open
two windows for one group, and a flush (which claims a window `FOR UPDATE`) either sees every
item a chunk filed or runs before it — in which case the chunk sees the window closed and opens
the next one. A preference window's `window_key` is unique for good, so a window already
flushed is never reopened: a late item goes to the following period.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from apps.core.conf import as_int, as_mapping, setting
from apps.notifications import rendering
from apps.notifications.models import Digest, DigestItem, DigestWindow, Notification, Recipient, uuid7
from apps.notifications.services.preferences import local_instant, zone
from apps.notifications.validators import MAX_KEY_LENGTH, MAX_RULE_WINDOW_MINUTES

RULE = "rule"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# The keys of SIGNALBOX_DIGESTS; project/settings.py passes only what the environment sets, and the
# defaults are DigestSettings' own.
DIGEST_KEYS = (
    "DAILY_AT",
    "WEEKLY_DAY",
    "ITEM_LIMIT",
    "FLUSH_BATCH_SIZE",
    "FLUSH_MAX_WINDOWS",
    "REPUBLISH_AFTER_SECONDS",
)


# --- Settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestSettings:
    daily_at: time = time(9, 0)
    weekly_day: int = 0  # Monday
    item_limit: int = 10  # items listed in a digest; the rest are "and N more"
    flush_batch_size: int = 100  # windows per flush task
    flush_max_windows: int = 20000  # windows one flush_due run hands out
    republish_after_seconds: int = 600  # a window handed out but still open after this is handed out again


def _parse_time(value: Any, where: str) -> time:
    if isinstance(value, time):
        return value
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{where} must be a time such as 09:00, not {value!r}.") from exc


def _parse_weekday(value: Any, where: str) -> int:
    if isinstance(value, int) and 0 <= value <= 6:
        return value
    if isinstance(value, str) and value.lower() in WEEKDAYS:
        return WEEKDAYS.index(value.lower())
    raise ImproperlyConfigured(f"{where} must be a weekday name (monday…sunday) or 0-6, not {value!r}.")


def digest_settings() -> DigestSettings:
    raw = as_mapping(setting("SIGNALBOX_DIGESTS"), "SIGNALBOX_DIGESTS", known=DIGEST_KEYS)
    base = DigestSettings()
    return DigestSettings(
        daily_at=_parse_time(raw.get("DAILY_AT", base.daily_at), 'SIGNALBOX_DIGESTS["DAILY_AT"]'),
        weekly_day=_parse_weekday(raw.get("WEEKLY_DAY", base.weekly_day), 'SIGNALBOX_DIGESTS["WEEKLY_DAY"]'),
        item_limit=as_int(raw.get("ITEM_LIMIT", base.item_limit), 'SIGNALBOX_DIGESTS["ITEM_LIMIT"]', minimum=1),
        flush_batch_size=as_int(
            raw.get("FLUSH_BATCH_SIZE", base.flush_batch_size), 'SIGNALBOX_DIGESTS["FLUSH_BATCH_SIZE"]', minimum=1
        ),
        flush_max_windows=as_int(
            raw.get("FLUSH_MAX_WINDOWS", base.flush_max_windows), 'SIGNALBOX_DIGESTS["FLUSH_MAX_WINDOWS"]', minimum=1
        ),
        republish_after_seconds=as_int(
            raw.get("REPUBLISH_AFTER_SECONDS", base.republish_after_seconds),
            'SIGNALBOX_DIGESTS["REPUBLISH_AFTER_SECONDS"]',
            minimum=1,
        ),
    )


def tenant_schedule(tenant_settings: Mapping[str, Any] | None) -> tuple[time, int]:
    """(daily_at, weekly_day) for a tenant: `Tenant.settings["digest"]`, else the settings.

    Values are validated when the tenant's settings are written; a bad one here falls back to the
    default rather than stopping fan-out.
    """
    defaults = digest_settings()
    own = (tenant_settings or {}).get("digest") or {}
    try:
        daily_at = _parse_time(own.get("daily_at", defaults.daily_at), "digest.daily_at")
    except ImproperlyConfigured:
        daily_at = defaults.daily_at
    try:
        weekly_day = _parse_weekday(own.get("weekly_day", defaults.weekly_day), "digest.weekly_day")
    except ImproperlyConfigured:
        weekly_day = defaults.weekly_day
    return daily_at, weekly_day


# --- Wall times and windows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    group_key: str
    window_key: str
    starts_at: datetime
    due_at: datetime


def period_window(*, frequency: str, now: datetime, tz: ZoneInfo, daily_at: time, weekly_day: int) -> Window:
    """The hourly, daily or weekly window containing `now`: [starts_at, due_at) in UTC."""
    local = now.astimezone(tz)
    if frequency == Digest.HOURLY:
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)  # keeps `fold`
        end = start + timedelta(hours=1)
    elif frequency == Digest.DAILY:
        today = local_instant(local.date(), daily_at, tz)
        if today <= now:
            start, end = today, local_instant(local.date() + timedelta(days=1), daily_at, tz)
        else:
            start, end = local_instant(local.date() - timedelta(days=1), daily_at, tz), today
    elif frequency == Digest.WEEKLY:
        day = local.date() + timedelta(days=(weekly_day - local.weekday()) % 7)
        end = local_instant(day, daily_at, tz)
        if end <= now:
            day += timedelta(days=7)
            end = local_instant(day, daily_at, tz)
        start = local_instant(day - timedelta(days=7), daily_at, tz)
    else:
        raise ValueError(f"Not a digest period: {frequency!r}")
    return Window(
        group_key=frequency,
        window_key=f"{frequency}@{end.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        starts_at=start,
        due_at=end,
    )


# --- The digest rule -----------------------------------------------------------------------------


def digest_rule_errors(rule: Any, declared: set[str] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """(normalized rule, errors) for `{"key": jinja source, "window_minutes": n}` (or None: no rule).

    `declared` are the variables the key may use (a template's), or None for any payload key.
    """
    if rule is None:
        return None, []
    if not isinstance(rule, Mapping):
        return None, ['An object {"key": "...", "window_minutes": n}, or null.']
    errors: list[str] = []
    unknown = sorted(set(rule) - {"key", "window_minutes"})
    if unknown:
        errors.append(f"Unknown field(s): {', '.join(unknown)}.")
    key = rule.get("key", "")
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        errors.append(f"`key` is a text of at most {MAX_KEY_LENGTH} characters (it may use {{{{ variables }}}}).")
        key = ""
    else:
        try:
            used = rendering._names_used(key)
        except jinja2.TemplateSyntaxError as exc:
            errors.append(f"`key`: line {exc.lineno}: {exc.message}")
        else:
            undeclared = used - declared - {rendering.RECIPIENT_VARIABLE} if declared is not None else set()
            if undeclared:
                errors.append(f"`key` uses undeclared variable(s): {', '.join(sorted(undeclared))}.")
            if rendering.RECIPIENT_VARIABLE in used:
                errors.append("`key` cannot use `recipient`: items of every recipient share it.")
    minutes = rule.get("window_minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= MAX_RULE_WINDOW_MINUTES:
        errors.append(f"`window_minutes` is a whole number from 1 to {MAX_RULE_WINDOW_MINUTES}.")
    if errors:
        return None, errors
    return {"key": key, "window_minutes": minutes}, []


def digest_rule_resolve(*, rule: Mapping[str, Any], scope: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The rule a notification carries: its key rendered with the payload and scoped (to the
    template), so that two templates never share a window. Raises RenderError."""
    try:
        rendered = rendering._compiled(str(rule["key"]), False).render(dict(payload))
    except jinja2.UndefinedError as exc:
        raise rendering.RenderError(f"Missing variable: {exc.message}") from exc
    except (jinja2.TemplateError, TypeError, ValueError, LookupError, AttributeError) as exc:
        raise rendering.RenderError(str(exc)) from exc
    return {"key": f"{scope}:{rendered.strip()}"[:255], "window_minutes": int(rule["window_minutes"])}


# --- Filing items --------------------------------------------------------------------------------


def _advisory_lock(keys: Iterable[str]) -> None:
    """Transaction-scoped locks on every key, taken in one fixed (sorted) order: no deadlocks."""
    ordered = sorted(set(keys))
    if not ordered or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(h) FROM "
            "(SELECT hashtextextended(k, 0) AS h FROM unnest(%s::text[]) AS k ORDER BY 1) AS locks",
            [ordered],
        )


def _lock_key(recipient_id: int, channel: str, group_key: str) -> str:
    return f"digest:{recipient_id}:{channel}:{group_key}"


def _open_windows(groups: Sequence[tuple[int, str, str]]) -> dict[tuple[int, str, str], DigestWindow]:
    """The open window of each group, locked FOR UPDATE (so a flush waits for this transaction)."""
    if not groups:
        return {}
    rows = (
        DigestWindow.objects.select_for_update(of=("self",))
        .filter(
            status=DigestWindow.Status.OPEN,
            recipient_id__in={g[0] for g in groups},
            group_key__in={g[2] for g in groups},
        )
        .only("id", "recipient_id", "channel", "group_key", "due_at")
        .order_by()
    )
    wanted = set(groups)
    return {
        (w.recipient_id, w.channel, w.group_key): w for w in rows if (w.recipient_id, w.channel, w.group_key) in wanted
    }


def digest_enqueue(
    *,
    deliveries: Sequence[Mapping[str, Any]],
    category_id: int,
    preferences: Any,
    now: datetime,
    notification: Notification | None = None,
    recipients: Iterable[Any] | None = None,
) -> int:
    """Files a DigestItem for each digest-bound delivery in its window (a constant number of
    statements whatever the count); returns how many.

    `deliveries` are the rows fan-out inserts in this transaction (id, tenant_id, recipient_id,
    channel). A recipient preferring a period digest goes to that period's window; otherwise the
    notification's digest rule decides. `recipients` (objects with `id` and `timezone`) saves a
    query for the timezones.
    """
    if not deliveries:
        return 0
    rule = (notification.digest if notification is not None else None) or None
    zones: dict[int, str] = {}
    if recipients is not None:
        zones = {r.id: r.timezone for r in recipients}
    missing = {d["recipient_id"] for d in deliveries} - set(zones)
    if missing:
        zones.update(Recipient.objects.filter(pk__in=missing).values_list("pk", "timezone"))
    tenant_settings = notification.tenant.settings if notification is not None else None
    daily_at, weekly_day = tenant_schedule(tenant_settings)

    # Which group each delivery collects in, and the window it would open.
    wanted: dict[tuple[int, str, str], Window] = {}
    frequency_of: dict[tuple[int, str, str], str] = {}
    group_of: list[tuple[int, str, str]] = []
    for d in deliveries:
        frequency = preferences.for_recipient(d["recipient_id"]).digest
        if frequency in (Digest.HOURLY, Digest.DAILY, Digest.WEEKLY):
            window = period_window(
                frequency=frequency, now=now, tz=zone(zones.get(d["recipient_id"], "")),
                daily_at=daily_at, weekly_day=weekly_day,
            )  # fmt: skip
        elif rule:
            frequency = RULE
            group = f"{RULE}:{rule['key']}"
            window = Window(group_key=group, window_key="", starts_at=now,
                            due_at=now + timedelta(minutes=int(rule["window_minutes"])))  # fmt: skip
        else:  # fan-out only sends deliveries here for a preference or a rule
            raise ValueError(f"Delivery {d['id']} has neither a digest preference nor a digest rule.")
        key = (d["recipient_id"], d["channel"], window.group_key)
        wanted.setdefault(key, window)
        frequency_of[key] = frequency
        group_of.append(key)

    _advisory_lock(_lock_key(*key) for key in wanted)
    windows = _open_windows(list(wanted))
    to_open = {key: window for key, window in wanted.items() if key not in windows}
    # A period window flushed already (an item late for it) is never reopened: the next one is used.
    for _ in range(4):
        taken = _closed_keys(to_open)
        if not taken:
            break
        for key in taken:
            previous = to_open[key]
            to_open[key] = period_window(
                frequency=frequency_of[key], now=previous.due_at, tz=zone(zones.get(key[0], "")),
                daily_at=daily_at, weekly_day=weekly_day,
            )  # fmt: skip
    tenant_id = deliveries[0]["tenant_id"]
    created = []
    for key, window in to_open.items():
        pk = uuid7()
        created.append(
            DigestWindow(
                id=pk,
                tenant_id=tenant_id,
                recipient_id=key[0],
                channel=key[1],
                frequency=frequency_of[key],
                group_key=window.group_key,
                window_key=window.window_key or f"{window.group_key}@{pk}",
                starts_at=window.starts_at,
                due_at=window.due_at,
                created_at=now,
            )
        )
    DigestWindow.objects.bulk_create(created)
    windows.update({(w.recipient_id, w.channel, w.group_key): w for w in created})

    DigestItem.objects.bulk_create(
        [
            DigestItem(
                tenant_id=d["tenant_id"],
                delivery_id=d["id"],
                recipient_id=d["recipient_id"],
                category_id=category_id,
                channel=d["channel"],
                frequency=frequency_of[key],
                window_id=windows[key].pk,
                created_at=now,
            )
            for d, key in zip(deliveries, group_of, strict=True)
        ],
        ignore_conflicts=True,
    )
    return len(deliveries)


def _closed_keys(candidates: Mapping[tuple[int, str, str], Window]) -> list[tuple[int, str, str]]:
    """The period candidates whose window_key exists already (that window was flushed)."""
    period = {key: w for key, w in candidates.items() if w.window_key}
    if not period:
        return []
    found = set(
        DigestWindow.objects.filter(
            recipient_id__in={k[0] for k in period}, window_key__in={w.window_key for w in period.values()}
        ).values_list("recipient_id", "channel", "window_key")
    )
    by_window: dict[tuple[int, str, str], list[tuple[int, str, str]]] = defaultdict(list)
    for key, window in period.items():
        by_window[(key[0], key[1], window.window_key)].append(key)
    return [key for triple in found for key in by_window.get(triple, [])]
