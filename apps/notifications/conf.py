"""Typed access to the notifications app's settings.

`SIGNALBOX_NOTIFICATIONS`: every knob's single default is its field below; project/settings.py passes
only what the environment overrides. The app's other settings (`NotificationsWiring`) have their default
in project/settings.py and are read here without one (apps/core/conf.py says why). A bad value raises
`ImproperlyConfigured` naming the setting, at start (the start-up check calls both readers) or on first
use after an override.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.core.conf import as_int, as_mapping, as_str, as_str_list, setting

# The most characters each rendered field may have, by `channel.field` (a JSON field counts all its
# rendered strings). A render that passes its limit stops there and fails (docs/notifications.md,
# "Template budgets"). SMS: Twilio's 1,600-character body; chat: Slack's 40,000-character text.
DEFAULT_OUTPUT_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "email.subject": 1_000,
        "email.text": 1_000_000,
        "email.html": 1_000_000,
        "sms.text": 1_600,
        "push.title": 1_000,
        "push.body": 4_000,
        "push.data": 4_000,
        "in_app.title": 1_000,
        "in_app.body": 10_000,
        "in_app.action_url": 2_048,
        "in_app.data": 16_000,
        "chat.text": 40_000,
        "webhook.body": 1_000_000,
    }
)


@dataclass(frozen=True)
class NotificationSettings:
    # A claim's lease. A live sender renews it between provider requests (a third of it before it
    # runs out), so an expired lease means the worker is gone, never that it is still sending.
    # Its default follows the task time limit: CELERY_TASK_TIME_LIMIT + 60 (filled in by `get()`).
    SEND_LEASE_SECONDS: int
    # Recipients per fan-out chunk task (one transaction, a constant number of queries each). At
    # 5,000 a chunk's fixed cost (its task, its dozen statements, its commit) is spread thin: 15 %
    # less worker and 20 % less PostgreSQL CPU per in-app row than at 2,000 (docs/benchmarks.md).
    FANOUT_CHUNK_SIZE: int = 5000
    # From this many recipients in a chunk its in-app rows are built by PostgreSQL from arrays (one
    # statement of their own, with one content per locale); a smaller chunk (one recipient, a flow
    # step) writes them with its other rows in one COPY (docs/benchmarks.md, "Fan-out").
    FANOUT_SHARED_ROWS_MIN: int = 100
    # Delivery ids per send task; adapters without a batch API are called one message at a time.
    SEND_BATCH_SIZE: int = 500
    # A send task hands the rest of its batch to a new task after this many seconds, so a slow
    # provider never runs into the task time limit with rows claimed.
    SEND_TIME_BUDGET_SECONDS: int = 120
    # How long a delivery whose answer was lost (`unknown`) waits for the provider's callback
    # before it is retried with the same provider (docs/reliability.md, "Ambiguous outcomes").
    RECONCILE_WINDOW_SECONDS: float = 600.0
    MAX_ATTEMPTS: int = 6
    RETRY_BASE_SECONDS: float = 15.0
    RETRY_CAP_SECONDS: float = 3600.0
    # Explicit audiences in one POST; larger audiences go through a topic.
    MAX_RECIPIENTS_PER_REQUEST: int = 10000
    MAX_BULK_UPSERT: int = 10000
    DEDUP_WINDOW_SECONDS: int = 3600
    INBOX_TOKEN_TTL_SECONDS: int = 3600
    INBOX_TOKEN_MAX_TTL_SECONDS: int = 86400
    # Rows per dispatcher transaction and how many such batches one run may take.
    DISPATCH_BATCH_SIZE: int = 500
    DISPATCH_MAX_BATCHES: int = 20
    # The sweeper's patience before it re-publishes something.
    SWEEP_INTENT_AFTER_SECONDS: int = 60
    SWEEP_CHUNK_AFTER_SECONDS: int = 300
    SWEEP_QUEUED_AFTER_SECONDS: int = 900
    # The sweeper's pace: rows per transaction, and batches of each kind until none is full or
    # this budget is spent (so a backlog of a million lost sends is taken back in minutes).
    SWEEP_BATCH_SIZE: int = 1000
    SWEEP_TIME_BUDGET_SECONDS: float = 20.0
    # Runs of one fan-out chunk (each failure, or its worker killed or past the time limit) before
    # it is `dead`: its notification ends `failed` with the reason instead of retrying forever.
    FANOUT_CHUNK_MAX_ATTEMPTS: int = 3
    # Template budgets: a template is a tenant's program, so every render is bounded. Per field:
    # loop iterations, the size of any string or sequence it makes (characters or items), and the
    # characters it produces in all (thrown-away values included); per render of one channel
    # (and per preview or save check), the wall-clock time; per field, TEMPLATE_OUTPUT_LIMITS.
    TEMPLATE_MAX_LOOP_ITERATIONS: int = 10_000
    TEMPLATE_MAX_VALUE_CHARS: int = 1_000_000
    TEMPLATE_MAX_WORK_CHARS: int = 5_000_000
    TEMPLATE_RENDER_SECONDS: float = 2.0
    # Overrides merged over DEFAULT_OUTPUT_LIMITS, e.g. {"sms.text": 480}.
    TEMPLATE_OUTPUT_LIMITS: Mapping[str, int] = field(default_factory=lambda: DEFAULT_OUTPUT_LIMITS)


# (the settings object, a deep copy of it, the task time limit, what it parsed to): rendering asks
# for every recipient.
_parsed: tuple[Any, Any, Any, NotificationSettings] | None = None


def get() -> NotificationSettings:
    global _parsed
    current = setting("SIGNALBOX_NOTIFICATIONS")
    time_limit = settings.CELERY_TASK_TIME_LIMIT
    cached = _parsed
    # Unchanged, even in place.
    if cached is not None and cached[0] is current and cached[1] == current and cached[2] == time_limit:
        return cached[3]
    parsed = _parse(current, time_limit)
    _parsed = (current, copy.deepcopy(current), time_limit, parsed)
    return parsed


def _parse(current: Any, time_limit: Any) -> NotificationSettings:
    raw: dict[str, Any] = dict(as_mapping(current, "SIGNALBOX_NOTIFICATIONS"))
    raw.setdefault("SEND_LEASE_SECONDS", as_int(time_limit, "CELERY_TASK_TIME_LIMIT", minimum=1) + 60)
    known = {f.name: f for f in fields(NotificationSettings)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ImproperlyConfigured(f"SIGNALBOX_NOTIFICATIONS has unknown keys: {', '.join(unknown)}.")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "TEMPLATE_OUTPUT_LIMITS":
            values[name] = _output_limits(value)
            continue
        kind = int if known[name].type in ("int", int) else float
        try:
            values[name] = kind(value)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"SIGNALBOX_NOTIFICATIONS[{name!r}] must be a number.") from exc
        if values[name] <= 0:
            raise ImproperlyConfigured(f"SIGNALBOX_NOTIFICATIONS[{name!r}] must be positive.")
    return NotificationSettings(**values)


def _output_limits(value: Any) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured("SIGNALBOX_NOTIFICATIONS['TEMPLATE_OUTPUT_LIMITS'] must be a mapping.")
    unknown = sorted(set(value) - set(DEFAULT_OUTPUT_LIMITS))
    if unknown:
        raise ImproperlyConfigured(
            f"TEMPLATE_OUTPUT_LIMITS has unknown keys: {', '.join(map(str, unknown))}; "
            f"use `channel.field` among {', '.join(DEFAULT_OUTPUT_LIMITS)}."
        )
    merged = dict(DEFAULT_OUTPUT_LIMITS)
    for key, limit in value.items():
        if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
            raise ImproperlyConfigured(f"TEMPLATE_OUTPUT_LIMITS[{key!r}] must be a positive whole number.")
        merged[key] = limit
    return MappingProxyType(merged)


@dataclass(frozen=True)
class NotificationsWiring:
    """Where providers and limits come from (defaults in project/settings.py)."""

    channel_providers: Mapping[str, Any]  # SIGNALBOX_CHANNEL_PROVIDERS (its entries: apps/notifications/channels.py)
    extra_providers: tuple[str, ...]  # SIGNALBOX_EXTRA_PROVIDERS
    chain_resolver: str  # SIGNALBOX_CHANNEL_CHAIN_RESOLVER: an import path, or empty
    rate_limits: Mapping[str, Any]  # SIGNALBOX_RATE_LIMITS (its entries: apps/notifications/services/ratelimits.py)
    callback_max_age_seconds: int  # SIGNALBOX_CALLBACK_MAX_AGE_SECONDS: older provider callbacks are replays
    sendgrid_event_public_key: str  # SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY


def wiring() -> NotificationsWiring:
    return NotificationsWiring(
        channel_providers=as_mapping(setting("SIGNALBOX_CHANNEL_PROVIDERS"), "SIGNALBOX_CHANNEL_PROVIDERS"),
        extra_providers=as_str_list(setting("SIGNALBOX_EXTRA_PROVIDERS"), "SIGNALBOX_EXTRA_PROVIDERS"),
        chain_resolver=as_str(setting("SIGNALBOX_CHANNEL_CHAIN_RESOLVER"), "SIGNALBOX_CHANNEL_CHAIN_RESOLVER"),
        rate_limits=as_mapping(setting("SIGNALBOX_RATE_LIMITS"), "SIGNALBOX_RATE_LIMITS"),
        callback_max_age_seconds=as_int(
            setting("SIGNALBOX_CALLBACK_MAX_AGE_SECONDS"), "SIGNALBOX_CALLBACK_MAX_AGE_SECONDS", minimum=1
        ),
        sendgrid_event_public_key=as_str(
            setting("SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY"), "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY"
        ),
    )
