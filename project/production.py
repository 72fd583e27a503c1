"""What a production process (DEBUG off) refuses to start with (docs/security.md, "Settings").

Values committed to this repository authenticate nothing: anyone can read them. The development
conveniences (the provider sandbox, webhooks to private addresses, the embedded broker, a
per-process cache) are wrong for a real deployment and fail silently there. `project/settings.py`
calls `insecure_settings()` last, once every setting is known, and raises ImproperlyConfigured
naming each problem's setting. `SIGNALBOX_ALLOW_INSECURE_SETTINGS=1` lets a deliberate
non-production run with DEBUG off (a staging stack on the sandbox) start anyway; it is named in
the error so that nobody has to guess it, and nobody sets it by accident.

Kept apart from settings.py so that the list of committed values is one table, and testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from project import sandbox_defaults as sandbox

OVERRIDE = "SIGNALBOX_ALLOW_INSECURE_SETTINGS"

# The committed development values (the sandbox's credentials, project/sandbox_defaults.py;
# docker-compose.dev.yml) by the setting that would carry them.
DEV_WEBHOOK_SIGNING_SECRET = "whsec_c2lnbmFsYm94LWRldmVsb3BtZW50LW9ubHktd2ViaG9vay1rZXk="  # noqa: S105
DEV_DATABASE_PASSWORD = "signalbox"  # noqa: S105 (docker-compose's PostgreSQL without POSTGRES_PASSWORD)


def committed_values() -> dict[str, frozenset[str]]:
    """Every value of this repository that production refuses, by setting name."""
    return {
        "SIGNALBOX_WEBHOOK_SIGNING_SECRET": frozenset({DEV_WEBHOOK_SIGNING_SECRET}),
        "SENDGRID_API_KEY": frozenset({sandbox.SENDGRID_API_KEY}),
        "TWILIO_ACCOUNT_SID": frozenset({sandbox.TWILIO_ACCOUNT_SID}),
        "TWILIO_AUTH_TOKEN": frozenset({sandbox.TWILIO_AUTH_TOKEN}),
        "SLACK_BOT_TOKEN": frozenset({sandbox.SLACK_BOT_TOKEN}),
    }


# Caches that every process of a deployment shares; LocMemCache and DummyCache are per process
# (a limit of 20/min let 53 of 60 requests through three gunicorn workers) or count nothing.
PER_PROCESS_CACHES = frozenset(
    {
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
    }
)


def insecure_settings(values: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """The problems of these settings for production, each naming its setting; [] when none."""
    problems: list[str] = []
    for name, committed in committed_values().items():
        if values.get(name) and str(values[name]) in committed:
            problems.append(f"{name} is a development value committed to the repository; set your own.")
    event_key = str(values.get("SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY") or "")
    if event_key and event_key == sandbox.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY:
        problems.append("SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY is the sandbox's key: anyone can sign SendGrid events.")
    database = values.get("DATABASES", {}).get("default", {})
    if database.get("PASSWORD") == DEV_DATABASE_PASSWORD:
        problems.append("DATABASE_URL uses docker-compose's development password; set POSTGRES_PASSWORD.")
    if values.get("SIGNALBOX_SANDBOX_URL"):
        problems.append(
            "SIGNALBOX_SANDBOX_URL is set: providers without credentials would send to the sandbox with its "
            "public credentials."
        )
    if values.get("SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE"):
        problems.append(
            "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE is on: tenants' webhook URLs could reach private and loopback addresses."
        )
    if not environ.get("CELERY_BROKER_URL"):
        problems.append(
            f"CELERY_BROKER_URL is not set (the default {values.get('CELERY_BROKER_URL')} is `make run`'s "
            "embedded Redis)."
        )
    throttles = (values.get("REST_FRAMEWORK") or {}).get("DEFAULT_THROTTLE_CLASSES")
    backend = str(values.get("CACHES", {}).get("default", {}).get("BACKEND", ""))
    if throttles and backend in PER_PROCESS_CACHES:
        problems.append(
            f"CACHE_URL is not a shared cache ({backend.rsplit('.', 1)[-1]}): each process would count request "
            "rate limits on its own. Set CACHE_URL=redis://…"
        )
    return problems


def refusal(problems: list[str]) -> str:
    """The ImproperlyConfigured message: every problem, then the way out."""
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return (
        f"Refusing to start with DEBUG off:\n{lines}\n"
        f"Fix them, or set {OVERRIDE}=1 for a deliberate non-production run (docs/security.md)."
    )
