"""Domain metrics, defined once. Labels are low-cardinality: never a recipient, never an id.

Import the metric and call it where the thing happens, e.g.
`metrics.DELIVERIES.labels(channel="email", provider="sendgrid", status="sent").inc()`.
Worker processes write to the Prometheus multiprocess directory when
`PROMETHEUS_MULTIPROC_DIR` is set (see docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

INTENTS = Counter("signalbox_intents_accepted_total", "Intents accepted by the API.", ["kind"])
DELIVERIES = Counter(
    "signalbox_deliveries_total", "Deliveries reaching a final status.", ["channel", "provider", "status"]
)
DELIVERY_LATENCY = Histogram(
    "signalbox_delivery_latency_seconds",
    "From intent accepted to provider acceptance.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
DELIVERY_ATTEMPTS = Counter(
    "signalbox_delivery_attempts_total", "Provider attempts by outcome.", ["channel", "provider", "outcome"]
)
DELIVERY_RETRIES = Counter("signalbox_delivery_retries_total", "Deliveries scheduled for retry.", ["channel"])
DEAD_LETTERS = Counter(
    "signalbox_dead_letters_total",
    "Deliveries, webhook messages or tracked tasks that went dead (kind: delivery, webhook, task).",
    ["kind", "channel"],
)
SUPPRESSED = Counter("signalbox_suppressed_total", "Deliveries suppressed, by reason.", ["channel", "reason"])
DELIVERIES_HELD = Counter(
    "signalbox_deliveries_held_total",
    "Deliveries held back for later (rate limit, quota, open circuit), by reason.",
    ["channel", "reason"],
)
CIRCUIT_OPENED = Counter("signalbox_circuit_opened_total", "Provider circuit breakers opened.", ["provider"])
PROVIDER_CALLBACKS = Counter(
    "signalbox_provider_callbacks_total", "Provider status events received, by outcome.", ["provider", "outcome"]
)
TASK_EXECUTIONS = Counter("signalbox_task_executions_total", "Tracked tasks finished, by status.", ["name", "status"])
TASK_DURATION = Histogram(
    "signalbox_task_duration_seconds",
    "Tracked task run time.",
    ["name"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
# No `workflow` label: workflow keys are chosen by tenants, so one label value per key would grow without
# bound. `stage` is `request` (refused before an intent was recorded) or `apply`; `outcome` is `applied`
# or the refusal's code (apps/workflows/guards.py), a fixed set.
TRANSITIONS = Counter(
    "signalbox_transitions_total",
    "Transition requests by stage and outcome (applied or refusal code).",
    ["stage", "outcome"],
)
WEBHOOK_ATTEMPTS = Counter("signalbox_webhook_attempts_total", "Outbound webhook attempts by outcome.", ["outcome"])
FLOW_STEPS = Counter(
    "signalbox_flow_steps_total", "Flow runs through a step, by what happened there.", ["flow", "step", "outcome"]
)
SWEEPER_RECOVERED = Counter("signalbox_sweeper_recovered_total", "Rows the sweeper put back on a queue.", ["kind"])
ROWS_PURGED = Counter("signalbox_rows_purged_total", "Rows deleted by retention purges.", ["table"])
# Computed at scrape time by the metrics exporter (apps/observability/collectors.py), which reports
# them under these names and help texts; nothing sets them in the API or the workers.
QUEUE_DEPTH = Gauge("signalbox_queue_depth", "Messages waiting per queue.", ["queue"], multiprocess_mode="max")
QUEUE_OLDEST_AGE = Gauge(
    "signalbox_queue_oldest_age_seconds",
    "Age of the oldest waiting intent per queue.",
    ["queue"],
    multiprocess_mode="max",
)
QUEUE_COLLECTOR_UP = Gauge(
    "signalbox_queue_collector_up",
    "1 when the exporter could read the broker / the database at the last scrape.",
    ["source"],
    multiprocess_mode="max",
)

# Every Celery task, set by the worker signal handlers (apps/observability/workers.py).
CELERY_TASKS_PUBLISHED = Counter(
    "signalbox_celery_tasks_published_total", "Tasks sent to the broker.", ["task", "queue"]
)
CELERY_TASKS = Counter(
    "signalbox_celery_tasks_total", "Tasks a worker finished running, by final state.", ["task", "queue", "state"]
)
CELERY_TASK_RUNTIME = Histogram(
    "signalbox_celery_task_runtime_seconds",
    "Time a worker spent running a task.",
    ["task", "queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
WORKER_ACTIVE_TASKS = Gauge(
    "signalbox_worker_active_tasks", "Tasks running now, per queue.", ["queue"], multiprocess_mode="livesum"
)


def observe_many(histogram: Any, amount: float, count: int) -> None:
    """`count` observations of the same `amount` on a histogram (child), as `count` calls to
    `observe` would record them, in constant time: a fan-out chunk's in-app rows share one latency.
    Falls back to the loop if prometheus_client's internals (`_sum`, `_buckets`) ever change."""
    if count <= 0:
        return
    buckets, bounds, total = (getattr(histogram, name, None) for name in ("_buckets", "_upper_bounds", "_sum"))
    if buckets is None or bounds is None or total is None:
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    for bucket, bound in zip(buckets, bounds, strict=True):
        if amount <= bound:
            bucket.inc(count)
            break


def count_rows_purged(table: str, rows: int) -> None:
    """Listens to the retention purges (apps/core/retention.py, `on_rows_purged`)."""
    ROWS_PURGED.labels(table=table).inc(rows)
