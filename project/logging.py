"""Logging for every process (API, workers, beat): one structured line per event, JSON in production.

structlog sits in front and the standard library behind it: Django's, Celery's and every library's
`logging` records go through the same `structlog.stdlib.ProcessorFormatter`, so every line of every
process has the same shape and the same guarantees:

- the correlation context (`apps/core/context.py`: request_id, tenant, notification_id, delivery_id,
  celery_task_id, task_name…) is added to every line written while it is bound, in the API and in
  the task a request caused;
- `apps.observability.redaction` runs last, so contact details and secrets never reach a line.

Django applies `settings.LOGGING` through `configure` (settings.LOGGING_CONFIG points here) and
Celery's `setup_logging` signal calls it again in workers and beat (workers/signals.py), which also
stops Celery from installing its own handlers. Use `structlog.get_logger(__name__)` in new code;
`logging.getLogger(__name__)` works as well.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import MutableMapping
from typing import Any

import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.core import context
from apps.observability.redaction import redact

LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

EventDict = MutableMapping[str, Any]


def add_correlation_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Adds what `apps.core.context` holds; keys given on the log call itself win."""
    for key, value in context.current().items():
        if value is not None and key not in event_dict:
            event_dict[key] = value
    return event_dict


def tidy_foreign_record(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Makes stdlib records from Django and Celery read like ours.

    Celery passes its formatting arguments again as `extra={"data": {...}}`: the task id and name are
    kept as `celery_task_id`/`task_name` and the rest dropped (it is already in the message). Django
    passes the request object as `extra` (after the request's context is unbound): its request id and
    tenant are kept, the object itself dropped.
    """
    data = event_dict.pop("data", None)
    if isinstance(data, dict) and str(event_dict.get("logger", "")).startswith("celery"):
        if data.get("id"):
            event_dict.setdefault("celery_task_id", data["id"])
        if data.get("name"):
            event_dict.setdefault("task_name", data["name"])
    elif data is not None:
        event_dict["data"] = data
    request = event_dict.get("request")
    if request is not None and not isinstance(request, str):
        # Django logs 4xx/5xx after the middleware's context is gone: take the ids from the request.
        if getattr(request, "request_id", None):
            event_dict.setdefault("request_id", request.request_id)
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            event_dict.setdefault("tenant", str(tenant.pk))
        event_dict.pop("request")
    event_dict.pop("server_time", None)
    if event_dict.get("message") == event_dict.get("event"):
        event_dict.pop("message")  # set on the record by a formatter that ran before ours
    return event_dict


def redact_event(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    redacted: EventDict = redact(dict(event_dict))
    return redacted


def _shared_processors() -> list[Any]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_correlation_context,
    ]


def _renderer(fmt: str) -> Any:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    return structlog.processors.JSONRenderer(sort_keys=False, default=str)


def check_options(*, level: str, fmt: str) -> tuple[str, str]:
    level, fmt = level.upper(), fmt.lower()
    if level not in LOG_LEVELS:
        raise ImproperlyConfigured(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} (got {level!r}).")
    if fmt not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)} (got {fmt!r}).")
    return level, fmt


def logging_config(*, level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """The `LOGGING` dict: one stderr handler whose formatter renders stdlib and structlog events alike."""
    level, fmt = check_options(level=level, fmt=fmt)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": [structlog.stdlib.ExtraAdder(), *_shared_processors(), tidy_foreign_record],
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    redact_event,
                    _renderer(fmt),
                ],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Named so that Django's default handlers (console when DEBUG, mail_admins) are replaced.
            "django": {"level": level},
            "django.db.backends": {"level": "WARNING"},
            # Probes and scrapes hit the dev server every few seconds; the access log is ours
            # (apps/core/middleware.py), with the request id and without query strings.
            "django.server": {"level": "WARNING"},
            # Celery's "Task … received" line is written before the task's context is known; the
            # worker writes its own `task received` line with it instead (apps/observability/workers.py).
            "celery.worker.strategy": {"level": "WARNING"},
        },
    }


def configure(logging_settings: dict[str, Any] | None = None) -> None:
    """Applies a `LOGGING` dict and configures structlog to hand its events to it. Safe to call again."""
    if logging_settings is None:
        logging_settings = settings.LOGGING
    logging.config.dictConfig(logging_settings)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
