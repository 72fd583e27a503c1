"""The operations dashboard in admin: today's intents, deliveries by status, dead letters, running tasks,
and what waits on each queue, each number linking to the admin list it counts.

Reads only. The numbers are the apps' own: each registers what it shows in a section from its
`AppConfig.ready()` (`register_dashboard_figures`), so this page knows no domain model. The queues
come from the queue table (workers/queues.py), the broker and the apps' waiting sources (collectors.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from apps.observability.collectors import broker_queue_depths, oldest_waiting_ages, waiting_sources
from workers.queues import QUEUE_SPECS

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Figure:
    """One number on the page and the admin list it counts."""

    label: str
    count: int
    url: str = ""


@dataclass
class Dashboard:
    since: datetime
    intents: list[Figure] = field(default_factory=list)
    deliveries: list[Figure] = field(default_factory=list)
    dead_letters: list[Figure] = field(default_factory=list)
    tasks: list[Figure] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    queue_error: str = ""


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of that millisecond: `id >= uuid7_floor(t)` is "created at or after t"."""
    millis = int(moment.timestamp() * 1000)
    return uuid.UUID(int=(millis & ((1 << 48) - 1)) << 80 | (0x7 << 76) | (0x2 << 62))


def start_of_today(now: datetime | None = None) -> datetime:
    return timezone.localtime(now or timezone.now()).replace(hour=0, minute=0, second=0, microsecond=0)


def changelist(model: str, **params: Any) -> str:
    """The admin list of `model` ("app_label.model"), filtered by `params`."""
    app_label, model_name = model.split(".")
    url = reverse(f"admin:{app_label}_{model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def day_of(since: datetime) -> dict[str, int]:
    """The date_hierarchy parameters of that day."""
    return {"created_at__year": since.year, "created_at__month": since.month, "created_at__day": since.day}


# --- What the apps show -------------------------------------------------------------------------

SECTIONS = ("intents", "deliveries", "dead_letters", "tasks")


@dataclass(frozen=True)
class _Contribution:
    order: int
    figures: Callable[[datetime], list[Figure]]


_CONTRIBUTIONS: dict[str, dict[str, _Contribution]] = {section: {} for section in SECTIONS}


def register_dashboard_figures(
    section: str, figures: Callable[[datetime], list[Figure]], *, order: int, key: str = ""
) -> None:
    """Called from an app's `ready()`: `figures(since)` are today's numbers of `section`.

    Sections list their contributions by `order`; one registered again under its key (default:
    the function's qualified name) replaces the first.
    """
    if section not in SECTIONS:
        raise ValueError(f"unknown dashboard section {section!r}; choose from {SECTIONS}")
    name = key or f"{figures.__module__}.{figures.__qualname__}"
    _CONTRIBUTIONS[section][name] = _Contribution(order, figures)


def _section(section: str, since: datetime) -> list[Figure]:
    contributions = sorted(_CONTRIBUTIONS[section].values(), key=lambda c: c.order)
    return [figure for contribution in contributions for figure in contribution.figures(since)]


def dashboard_build(*, now: datetime | None = None, with_queues: bool = True) -> Dashboard:
    since = start_of_today(now)
    board = Dashboard(since=since)
    board.intents = _section("intents", since)
    board.deliveries = _section("deliveries", since)
    board.dead_letters = _section("dead_letters", since)
    board.tasks = _section("tasks", since)
    if with_queues:
        _add_queues(board)
    return board


def _add_queues(board: Dashboard) -> None:
    ages = oldest_waiting_ages(waiting_sources())
    try:
        depths: dict[str, int] | None = broker_queue_depths(
            settings.CELERY_BROKER_URL,
            [spec.name for spec in QUEUE_SPECS],
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        )
    except Exception as exc:  # the page still shows the database's view
        log.warning("queue depth unavailable for the dashboard", error=f"{type(exc).__name__}: {exc}")
        depths = None
        board.queue_error = f"The broker did not answer ({type(exc).__name__})."
    board.queues = [
        {
            "name": spec.name,
            "group": spec.group,
            "purpose": spec.purpose,
            "depth": None if depths is None else depths.get(spec.name, 0),
            "oldest_seconds": round(ages.get(spec.name, 0.0)),
        }
        for spec in QUEUE_SPECS
    ]
