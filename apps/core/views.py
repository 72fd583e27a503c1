"""Probes: `/healthz` says the process is alive, `/readyz` that its database and broker answer."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from kombu import Connection


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except Exception as exc:  # any failure means not ready
        return type(exc).__name__


def _check_broker() -> str | None:
    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            if hasattr(channel, "client"):  # Redis connects lazily: ask it.
                channel.client.ping()
        return None
    except Exception as exc:
        return type(exc).__name__


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "broker": _check_broker()}
    ready = all(v is None for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: "ok" if err is None else f"error: {err}" for name, err in checks.items()},
    }
    return JsonResponse(body, status=200 if ready else 503)
