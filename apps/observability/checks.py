"""Configuration checks run at start: a bad URL, a placeholder secret in production or an unknown provider
name stops the process with a message naming the setting, instead of failing at the first request.

They are Django system checks (tag `signalbox`, so `manage.py check` and `migrate` run them) and the
processes that never run management commands run them too: gunicorn's master (project/gunicorn.py),
each Celery worker and beat (apps/observability/workers.py) and the metrics exporter, through
`check_configuration_or_fail()`. A value of the wrong type or out of range is refused by the app's
typed settings (`check_settings` calls every reader registered with apps/core/conf.py); the other
checks are the ones that need other settings, the environment or an import to judge. An app registers
its own checks under `TAG` (the notifications app: every provider named in the chains exists,
apps/notifications/checks.py).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register, run_checks
from django.core.exceptions import ImproperlyConfigured

from apps.core.conf import settings_problems

TAG = "signalbox"

BROKER_SCHEMES = {"redis", "rediss", "sentinel", "redis+socket", "amqp", "amqps", "pyamqp", "sqs"}
DEV_BROKER_SCHEMES = {"memory"}
PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "placeholder")
OTEL_PACKAGES = (
    "opentelemetry.sdk",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.instrumentation.django",
    "opentelemetry.instrumentation.celery",
    "opentelemetry.instrumentation.psycopg",
    "opentelemetry.instrumentation.redis",
    "opentelemetry.instrumentation.requests",
)


def _url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


@register(TAG)
def check_urls(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    broker = urlsplit(settings.CELERY_BROKER_URL)
    schemes = BROKER_SCHEMES | (DEV_BROKER_SCHEMES if settings.DEBUG else set())
    if broker.scheme not in schemes:
        errors.append(
            Error(
                f"CELERY_BROKER_URL has scheme {broker.scheme!r}; use one of {', '.join(sorted(schemes))}.",
                hint="e.g. redis://redis:6379/0 or amqp://user:password@rabbitmq:5672//",
                id="signalbox.E001",
            )
        )
    elif broker.scheme not in DEV_BROKER_SCHEMES | {"redis+socket"} and not broker.hostname:
        errors.append(Error("CELERY_BROKER_URL names no host.", id="signalbox.E001"))

    engine = settings.DATABASES["default"]["ENGINE"]
    if not settings.DEBUG and "postgresql" not in engine:
        errors.append(
            Error(
                f"DATABASE_URL uses {engine.rsplit('.', 1)[-1]}; production runs on PostgreSQL.",
                hint="The embedded SQLite default is for `make run` only. Set DATABASE_URL=postgres://…",
                id="signalbox.E002",
            )
        )

    public = urlsplit(settings.PUBLIC_URL)
    if public.scheme not in ("http", "https") or not public.hostname:
        errors.append(
            Error(f"SIGNALBOX_PUBLIC_URL {settings.PUBLIC_URL!r} is not an http(s) URL.", id="signalbox.E003")
        )
    elif not settings.DEBUG and public.scheme != "https":
        errors.append(
            Warning(
                "SIGNALBOX_PUBLIC_URL is not https: links in emails (unsubscribe, tracking) would go out in clear.",
                id="signalbox.W003",
            )
        )
    return errors


@register(TAG)
def check_tracing(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not endpoint:
        return []
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [Error(f"OTEL_EXPORTER_OTLP_ENDPOINT {endpoint!r} is not an http(s) URL.", id="signalbox.E004")]
    missing = [name for name in OTEL_PACKAGES if not _has(name)]
    if missing:
        return [
            Error(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: " + ", ".join(missing) + ".",
                hint="Install the opentelemetry-* packages pinned in requirements/base.txt, or unset the variable.",
                id="signalbox.E005",
            )
        ]
    return []


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@register(TAG)
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return []
    errors: list[CheckMessage] = []
    from prometheus_client import values

    if "Mmap" not in values.ValueClass.__name__:
        errors.append(
            Error(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported: metrics stay per process.",
                hint="Set it in the process environment (the container or Procfile), not from Python.",
                id="signalbox.E006",
            )
        )
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as exc:
        errors.append(Error(f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not writable: {exc}.", id="signalbox.E007"))
    return errors


def _placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in PLACEHOLDERS)


@register(TAG)
def check_secrets(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Production refuses example values (k8s/secret.example.yaml says `change-me`)."""
    errors: list[CheckMessage] = []
    flower_auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    for credentials in filter(None, flower_auth.split(",")):
        user, sep, password = credentials.partition(":")
        if not (user and sep and password):
            errors.append(Error("FLOWER_BASIC_AUTH must be user:password pairs, comma-separated.", id="signalbox.E008"))
            break
    if settings.DEBUG:
        return errors
    candidates = {
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": str(settings.DATABASES["default"].get("PASSWORD") or ""),
        "CELERY_BROKER_URL": _url_password(settings.CELERY_BROKER_URL),
        "SIGNALBOX_ENCRYPTION_KEY": str(settings.SIGNALBOX_ENCRYPTION_KEY),  # its format: check_settings
        "FLOWER_BASIC_AUTH": flower_auth,
    }
    for name, value in candidates.items():
        if value and _placeholder(value):
            errors.append(
                Error(
                    f"{name} holds a placeholder value in production.", hint="Set the real secret.", id="signalbox.E009"
                )
            )
    return errors


@register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every app's typed settings (the readers registered with apps/core/conf.py): type and range."""
    return [Error(problem, id="signalbox.E011") for problem in settings_problems()]


def check_configuration_or_fail(messages: Iterable[CheckMessage] | None = None) -> None:
    """Runs every check of the tag (the apps register theirs); raises ImproperlyConfigured listing every
    error (warnings are only logged)."""
    found = list(messages if messages is not None else run_checks(tags=[TAG]))
    log = structlog.get_logger(__name__)
    for message in found:
        if not message.is_serious():
            log.warning("configuration warning", check=message.id, message=message.msg)
    errors = [message for message in found if message.is_serious()]
    if errors:
        raise ImproperlyConfigured(
            "Signalbox will not start with this configuration:\n"
            + "\n".join(f"  {m.id}: {m.msg}" + (f" ({m.hint})" if m.hint else "") for m in errors)
        )
