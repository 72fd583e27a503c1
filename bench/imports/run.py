"""Imports benchmark: a million recipients in one call, beside a plain COPY of the same rows, then the
million-recipient send in two calls.

    .venv/bin/python -m bench.imports.run --rows 1000000

It creates, migrates and drops its own database (`signalbox_bench_imports`) and uses its own Redis
database number and key prefix. Phases, in one run:

1. the ceiling: the same rows, already in COPY text form (built before the clock starts), COPYed into
   a bare table (four text columns, no index, no constraint): what PostgreSQL alone costs (best of two);
2. the import: `POST /api/v1/recipients/imports/` with the NDJSON file (external_id, email, name, topic)
   through the real view, then the tracked task on a real Celery worker until it succeeded. Reported:
   the POST (the body streamed to a file and stored), end to end (the POST to the task final), rows/s,
   SQL statements of the worker (an execute wrapper, COPY included), and the peak RSS of the worker
   processes (kernel `VmHWM`);
3. the send: `POST /api/v1/notifications/` to the topic the file named (the in-app channel, or
   `--channels in_app,email` with email on the `sink` adapter), until the notification is
   `completed`. With phase 2 this is the million-recipient send in two calls.

The machine may be shared: the 1-minute load average is reported before and after each phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_environment, database_create, database_drop, log, results_compare, results_write
from bench.fanout.run import Worker

ROOT = Path(__file__).resolve().parents[2]
QUEUES = "tasks,notifications.high,notifications.default,notifications.bulk,maintenance"
TOPIC = "everyone"
TEMPLATE_KEY = "bench_launch"
IMPORT_TASK = "signalbox.notifications.import_recipients"


def configure(args: argparse.Namespace) -> None:
    """Environment for this process and the worker it starts (read by project/settings.py)."""
    os.environ.update(
        bench_environment(
            database_url=f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}",
            broker_url=args.redis,
            prefix="sbxbench",
            BENCH_REDIS_URL=args.redis,
            BENCH_COUNTER_KEY=f"sbxbench:{os.getpid()}:queries",
            MEDIA_ROOT=str(args.work / "media"),
        )
    )
    sys.path.insert(0, str(ROOT))


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --- Data ----------------------------------------------------------------------------------------


def generate(rows: int, path: Path) -> int:
    """The NDJSON file: one recipient a line, every one in the topic. Returns its size in bytes."""
    with path.open("w") as out:
        for i in range(rows):
            out.write(
                json.dumps(
                    {"external_id": f"u{i:08d}", "email": f"u{i:08d}@example.com", "name": f"User {i}", "topic": TOPIC}
                )
                + "\n"
            )
    return path.stat().st_size


def prepare() -> tuple[Any, str]:
    """The bench tenant (email on the sink adapter), its template and an API key."""
    from apps.notifications.services.templates import template_create
    from apps.tenancy.models import Tenant
    from apps.tenancy.services import api_key_create

    tenant = Tenant.objects.create(slug="bench", name="Bench", settings={"channel_providers": {"email": ["sink"]}})
    template_create(
        tenant=tenant,
        key=TEMPLATE_KEY,
        definition={
            "name": "Launch",
            "category": "announcements",
            "variables": [{"name": "product", "example": "Signalbox"}],
            "default_channels": ["in_app"],
            "content": {
                "default": {
                    "email": {"subject": "{{ product }} is here", "text": "Hi {{ recipient.name }}, try it."},
                    "in_app": {"title": "{{ product }} is here", "body": "Try it.", "action_url": "/launch"},
                }
            },
        },
    )
    _, key = api_key_create(tenant=tenant, name="bench")
    return tenant, key


# --- Phases --------------------------------------------------------------------------------------


def run_copy(source: Path) -> dict[str, Any]:
    """The ceiling: the same rows COPYed into a bare table, the text built before the clock starts."""
    from django.db import connection

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    with source.open() as lines:
        data = "".join(
            "\t".join(escape(item[k]) for k in ("external_id", "email", "name", "topic")) + "\n"
            for item in map(json.loads, lines)
        ).encode()
    runs = []
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_bare_recipients")
            cursor.execute("CREATE TABLE bench_bare_recipients (external_id text, email text, name text, topic text)")
        before = load()
        started = time.perf_counter()
        with connection.cursor() as cursor, cursor.cursor.copy("COPY bench_bare_recipients FROM STDIN") as copy:
            copy.write(data)
        runs.append((time.perf_counter() - started, before))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bench_bare_recipients")
        (rows,) = cursor.fetchone()
        cursor.execute("DROP TABLE bench_bare_recipients")
    seconds, before = min(runs)
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "runs_s": [round(s, 3) for s, _ in runs],
        "load_1m_before_after": [before, load()],
    }


def _queries() -> int:
    import redis

    from bench.fanout.worker_app import COUNTER_KEY

    return int(redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).get(COUNTER_KEY) or 0)


def _reset_queries() -> None:
    import redis

    from bench.fanout.worker_app import COUNTER_KEY

    redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).set(COUNTER_KEY, 0)


def run_import(source: Path, rows: int, api_key: str, worker: Worker, timeout: float) -> dict[str, Any]:
    from rest_framework.test import APIClient

    from apps.notifications.models import Recipient, TopicMembership
    from apps.tasks.models import TaskExecution

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    body = source.read_bytes()  # the test client sends a body it holds; the view streams it to a file
    _reset_queries()
    before = load()
    started = time.perf_counter()
    response = client.post("/api/v1/recipients/imports/", data=body, content_type="application/x-ndjson")
    posted = time.perf_counter() - started
    del body
    if response.status_code != 202:
        raise SystemExit(f"the import answered {response.status_code}: {response.content[:500]!r}")
    task_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    last_sample = 0.0
    while True:
        status = TaskExecution.objects.filter(pk=task_id).values_list("status", flat=True).get()
        if status in ("succeeded", "failed", "dead", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the import did not finish within {timeout} s; see {worker.log_path}")
        if time.monotonic() - last_sample > 0.25:
            worker.sample()
            last_sample = time.monotonic()
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    peak = worker.high_water_mark()
    time.sleep(0.5)  # the task's counter flush follows its postrun
    execution = TaskExecution.objects.get(pk=task_id)
    if status != "succeeded":
        raise SystemExit(f"the import ended {status}: {execution.error_code} {execution.error_message}")
    result = dict(execution.result or {})
    landed = Recipient.objects.filter(tenant=execution.tenant_id).count()
    members = TopicMembership.objects.filter(topic__tenant=execution.tenant_id, topic__key=TOPIC).count()
    if (landed, members, result.get("created")) != (rows, rows, rows):
        raise SystemExit(f"expected {rows} recipients and members, got {landed}, {members}: {result}")
    queries = _queries()
    return {
        "rows": rows,
        "post_seconds": round(posted, 3),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "worker_sql_statements": queries,
        "peak_worker_rss_mb": round(peak / 2**20, 1),
        "result": result,
        "load_1m_before_after": [before, load()],
    }


def run_send(rows: int, api_key: str, channels: list[str], worker: Worker, timeout: float) -> dict[str, Any]:
    from django.db.models import Count
    from rest_framework.test import APIClient

    from apps.notifications.models import Delivery, Notification

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    body = {
        "template": TEMPLATE_KEY,
        "payload": {"product": "Signalbox"},
        "topic": TOPIC,
        "channels": channels,
        "priority": "bulk",
    }
    before = load()
    started = time.perf_counter()
    response = client.post("/api/v1/notifications/", body, format="json")
    if response.status_code != 202:
        raise SystemExit(f"the send answered {response.status_code}: {response.content[:500]!r}")
    notification_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    dispatched = None
    last_sample = 0.0
    while True:
        status = Notification.objects.filter(pk=notification_id).values_list("status", flat=True).get()
        now = time.perf_counter()
        if dispatched is None and status in ("dispatched", "completed"):
            dispatched = now
        if status == "completed":
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the send did not complete within {timeout} s; see {worker.log_path}")
        if time.monotonic() - last_sample > 0.5:
            worker.sample()
            last_sample = time.monotonic()
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    states = {
        f"{row['channel']}:{row['status']}": row["n"]
        for row in Delivery.objects.filter(notification_id=notification_id)
        .values("channel", "status")
        .annotate(n=Count("*"))
        .order_by()
    }
    deliveries = sum(states.values())
    if deliveries != rows * len(channels):
        raise SystemExit(f"expected {rows * len(channels)} deliveries, got {states}")
    assert dispatched is not None
    return {
        "recipients": rows,
        "deliveries": deliveries,
        "seconds": round(seconds, 3),
        "fanout_seconds": round(dispatched - started, 3),
        "deliveries_per_s": round(deliveries / seconds),
        "states": states,
        "load_1m_before_after": [before, load()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--channels", default="in_app", help="Channels of the send (email goes to the sink).")
    parser.add_argument("--concurrency", type=int, default=2, help="Worker processes.")
    parser.add_argument("--skip-send", action="store_true", help="Import only.")
    parser.add_argument("--database", default="signalbox_bench_imports")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    args.work = Path(tempfile.mkdtemp(prefix="signalbox-bench-imports-"))

    configure(args)
    database_create(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)
    worker: Worker | None = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        log(f"migrating {args.database}")
        call_command("migrate", verbosity=0)
        _, api_key = prepare()
        source = args.work / "recipients.ndjson"
        size = generate(args.rows, source)
        log(f"{args.rows:,} rows, {size / 2**20:.1f} MiB of NDJSON in {source}")

        log("ceiling: COPY of the same rows into a bare table")
        copy = run_copy(source)
        log(f"  {copy}")

        worker = Worker(args.concurrency, args.work / "worker.log")
        worker_start(worker)
        log("import: POST /api/v1/recipients/imports/, then the tracked task")
        imported = run_import(source, args.rows, api_key, worker, args.timeout)
        log(f"  {imported}")

        sent: dict[str, Any] | None = None
        if not args.skip_send:
            channels = [c.strip() for c in args.channels.split(",") if c.strip()]
            log(f"send: POST /api/v1/notifications/ to the topic ({', '.join(channels)})")
            sent = run_send(args.rows, api_key, channels, worker, args.timeout)
            log(f"  {sent}")
        report(args, copy, imported, sent)
    finally:
        if worker is not None:
            worker.stop()
        database_drop(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)
        with contextlib.suppress(OSError):
            for path in sorted(args.work.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            args.work.rmdir()


def worker_start(worker: Worker) -> None:
    """The fan-out bench's worker (statements counted), on the tasks queue as well."""
    import bench.fanout.run as fanout

    fanout.QUEUES = QUEUES  # Worker.start reads the module's queue list
    worker.start()


def report(
    args: argparse.Namespace, copy: dict[str, Any], imported: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    two_calls = round(imported["seconds"] + sent["seconds"], 3) if sent else None
    results = {
        "rows": args.rows,
        "copy_ceiling": copy,
        "import": imported,
        "send": sent,
        "two_calls_seconds": two_calls,
        "ratios": {"import_vs_copy": round(imported["rows_per_s"] / copy["rows_per_s"], 4)},
        "environment": {
            "cpus": os.cpu_count(),
            "worker_processes": args.concurrency,
            "load_average_1m_at_end": load(),
        },
    }
    print("\n| phase | rows | seconds | rows/s | worker SQL statements | peak worker RSS | load 1m before → after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(
        f"| COPY ceiling (bare table) | {copy['rows']:,} | {copy['seconds']} | {copy['rows_per_s']:,} | — | — "
        f"| {copy['load_1m_before_after'][0]} → {copy['load_1m_before_after'][1]} |"
    )
    print(
        f"| import (POST {imported['post_seconds']} s + task) | {imported['rows']:,} | {imported['seconds']} "
        f"| {imported['rows_per_s']:,} | {imported['worker_sql_statements']:,} | {imported['peak_worker_rss_mb']} MB "
        f"| {imported['load_1m_before_after'][0]} → {imported['load_1m_before_after'][1]} |"
    )
    if sent:
        print(
            f"| send to the topic ({sent['deliveries']:,} deliveries) | {sent['recipients']:,} | {sent['seconds']} "
            f"| {sent['deliveries_per_s']:,} | — | — "
            f"| {sent['load_1m_before_after'][0]} → {sent['load_1m_before_after'][1]} |"
        )
        print(f"\nthe {args.rows:,}-recipient send in two calls: {two_calls} s end to end")
    path = results_write("imports", results)
    log(f"results in {path}")
    results_compare("imports", results, path)


if __name__ == "__main__":
    main()
