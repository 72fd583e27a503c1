"""OpenTelemetry: off (and not even imported) without OTEL_EXPORTER_OTLP_ENDPOINT; with it, spans of
requests, queries, Redis, outgoing HTTP and task publishes reach the OTLP endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
import django
django.setup()
from apps.observability.tracing import configure_tracing
enabled = configure_tracing(service_name="signalbox-test")
imported_before = "opentelemetry" in sys.modules
if enabled:
    import requests, redis
    from django.db import connection
    from django.test import Client
    from opentelemetry import trace
    from apps.core.tasks import diagnose
    Client(HTTP_HOST="localhost").get("/healthz")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).ping()
    requests.get(os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/ping", timeout=5)
    diagnose.apply_async()
    trace.get_tracer_provider().force_flush()
print(json.dumps({"enabled": enabled, "otel_imported": imported_before}))
"""


def run_script(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full = {
        **base,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "1",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/signalbox",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CELERY_BROKER_KEYPREFIX": f"sbxtest:otel:{uuid.uuid4().hex[:8]}:",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tracing_is_off_and_not_imported_without_an_endpoint():
    assert run_script() == {"enabled": False, "otel_imported": False}


@pytest.fixture
def collector():
    """A stand-in OTLP/HTTP collector on 127.0.0.1 that keeps the span names it receives."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = next(
                        a.value.string_value for a in resource.resource.attributes if a.key == "service.name"
                    )
                    spans.extend((service, s.name) for scope in resource.scope_spans for s in scope.spans)
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.spans = spans  # type: ignore[attr-defined]
    yield server
    server.shutdown()


def test_with_an_endpoint_requests_queries_redis_http_and_publishes_are_traced(collector):
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    assert run_script(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)["enabled"] is True

    services = {service for service, _ in collector.spans}
    names = sorted({name for _, name in collector.spans})
    assert services == {"signalbox-test"}
    assert any(name.startswith("GET") and "healthz" in name for name in names), names  # Django
    assert any(name.startswith("SELECT") for name in names), names  # psycopg
    assert "PING" in names, names  # redis
    assert "GET" in names, names  # requests
    assert any("signalbox.maintenance.diagnose" in name for name in names), names  # Celery publish
