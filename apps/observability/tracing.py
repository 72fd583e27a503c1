"""OpenTelemetry tracing, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Without the variable `configure_tracing` returns at once and imports nothing, so tracing costs
nothing. With it, spans of Django requests, Celery publishes and runs (linked across the broker),
psycopg queries, Redis commands and outgoing `requests` calls go to the OTLP/HTTP endpoint in
batches. The standard `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
`OTEL_EXPORTER_OTLP_HEADERS`, …).

It must run in each process *after* any fork, because the batch exporter's thread does not survive
one: gunicorn calls it in `post_fork` (project/gunicorn.py), Celery in `worker_process_init` and
`beat_init` (apps/observability/workers.py).
"""

from __future__ import annotations

import os
from typing import Any

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"

_configured_pid: int | None = None


def tracing_enabled() -> bool:
    return bool(os.environ.get(ENDPOINT_VARIABLE, "").strip())


def configure_tracing(*, service_name: str) -> bool:
    """Installs the tracer provider and the instrumentations once per process; False when off."""
    global _configured_pid
    if not tracing_enabled():
        return False
    if _configured_pid == os.getpid():
        return True

    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)

    instrumentors: list[Any] = [
        DjangoInstrumentor(),
        CeleryInstrumentor(),
        PsycopgInstrumentor(),
        RedisInstrumentor(),
        RequestsInstrumentor(),
    ]
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    _configured_pid = os.getpid()
    return True
