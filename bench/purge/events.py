"""Retention purge benchmark for events and webhooks: purge N expired events (each with one rule
execution, one webhook message and one attempt) while writer processes record events and webhook
sends, and measure what the writers feel.

    .venv/bin/python -m bench.purge.events --rows 300000 --mode partitions

The same shape as `bench.purge.run` (deliveries), whose loading helpers, lock sampler and summaries
it reuses: its own database (`signalbox_bench_purge_events`), the events spread over the four months
150 to 60 days ago with UUIDv7 ids of their time (their executions and messages land in those months'
partitions, the attempts in their messages' months); 1 % of the messages of the newest 5 days still
`pending` (in flight: their events must survive, and they keep that month's partition). Retention
30 days for events and webhook messages.

`--mode delete`: the `events` policy's batched DELETE alone (through Django's collector: an event
has executions, messages and their attempts); `--mode partitions`: what `signalbox.maintenance.
purge_events` does (`events_purge_run`): drop the events partitions past retention with the same
month of executions, messages and attempts, then the batched DELETE for what is left.

Writers, each iteration timed statement by statement (autocommit): INSERT an event, INSERT its rule
execution, INSERT its webhook message, UPDATE it delivered, INSERT its attempt; every fifth, UPDATE
an *old* message (a replay of an expired row). Written to `bench/results/purge_events_<mode>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import bench_environment, database_create, database_drop, log, results_compare, results_write
from bench.purge.run import WRITER_APP, PhaseTimer, _select_list, purge_beside_writers, writer_loop, writers_summary

ROOT = Path(__file__).resolve().parents[2]

# A UUIDv7 of the time `at` (an SQL expression of a timestamptz), as uuid7() makes them.
UUID7_OF = (
    "(lpad(to_hex((extract(epoch FROM {at}) * 1000)::bigint), 12, '0') || '7' "
    "|| substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid"
)


def configure(args: argparse.Namespace) -> None:
    os.environ.update(
        bench_environment(
            database_url=f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}",
            broker_url=args.redis,
            prefix="sbxbenchpurgeev",
            SIGNALBOX_EVENT_RETENTION_DAYS="30",
            SIGNALBOX_RETENTION_WEBHOOK_MESSAGES_DAYS="30",
        )
    )
    sys.path.insert(0, str(ROOT))


def load(args: argparse.Namespace) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from apps.core.partitions import partitions_ensure
    from apps.events.models import Event, Rule, RuleExecution, WebhookAttempt, WebhookEndpoint, WebhookMessage
    from apps.tenancy.services import tenant_create

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    tenant = tenant_create(slug="bench", name="Bench")
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="https://example.com/hook", secret_encrypted="x")  # noqa: S106
    rule = Rule.objects.create(tenant=tenant, name="bench", event_type="order.*", actions=[])
    partitions_ensure(now=timezone.now() - timedelta(days=150), ahead=8)
    log(f"loading {args.rows:,} expired events with an execution, a message and an attempt each")
    with connection.cursor() as cursor:
        cols, exprs, params = _select_list(
            Event,
            {
                "id": UUID7_OF.format(at="g.at"),
                "tenant_id": ("%s", [tenant.pk]),
                "type": "'order.paid'",
                "status": "'processed'",
                "payload": "'{\"n\": 1}'::jsonb",
                "created_at": "g.at",
                "processed_at": "g.at",
            },
        )
        cursor.execute(
            f"INSERT INTO {Event._meta.db_table} ({cols}) SELECT {exprs} FROM (SELECT now() - interval '150 days' "
            f"+ (n::float / %s) * interval '90 days' AS at FROM generate_series(1, %s) n) g",
            [*params, args.rows, args.rows],
        )
        cols, exprs, params = _select_list(
            RuleExecution,
            {
                "tenant_id": "e.tenant_id",
                "rule_id": ("%s", [rule.pk]),
                "event_id": "e.id",
                "outcome": "'succeeded'",
                "created_at": "e.created_at",
            },
        )
        cursor.execute(
            f"INSERT INTO {RuleExecution._meta.db_table} ({cols}) SELECT {exprs} FROM {Event._meta.db_table} e",
            params,
        )
        cols, exprs, params = _select_list(
            WebhookMessage,
            {
                "id": UUID7_OF.format(at="e.created_at + interval '2 seconds'"),
                "tenant_id": "e.tenant_id",
                "endpoint_id": ("%s", [endpoint.pk]),
                "event_id": "e.id",
                "event_type": "e.type",
                "body": '\'{"type": "order.paid"}\'',
                "status": "CASE WHEN random() < 0.01 AND e.created_at > now() - interval '65 days' "
                "THEN 'pending' ELSE 'delivered' END",
                "attempt_count": "1",
                "created_at": "e.created_at",
                "updated_at": "e.created_at",
                "delivered_at": "e.created_at",
            },
        )
        cursor.execute(
            f"INSERT INTO {WebhookMessage._meta.db_table} ({cols}) SELECT {exprs} FROM {Event._meta.db_table} e",
            params,
        )
        cols, exprs, params = _select_list(
            WebhookAttempt,
            {
                "tenant_id": "m.tenant_id",
                "message_id": "m.id",
                "number": "1",
                "outcome": "'success'",
                "status_code": "200",
                "duration_ms": "40",
                "created_at": "m.created_at",
            },
        )
        cursor.execute(
            f"INSERT INTO {WebhookAttempt._meta.db_table} ({cols}) SELECT {exprs} "
            f"FROM {WebhookMessage._meta.db_table} m",
            params,
        )
        for model in (Event, RuleExecution, WebhookMessage, WebhookAttempt):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
        cursor.execute(
            f"SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FROM {WebhookMessage._meta.db_table}"
        )
        pending, total = cursor.fetchone()
    log(f"loaded {total:,} events ({pending:,} with a message pending) in {time.monotonic() - started:.0f} s")
    return {
        "tenant_id": str(tenant.pk),
        "pending": pending,
        "events": total,
        "load_seconds": time.monotonic() - started,
    }


def writer(index: int, rate: float, phase: Any, stop: Any, out: Any) -> None:
    """One writer process: its own connection, timing each statement."""
    import django

    django.setup()
    from django.db import connection

    from apps.events.models import Event, Rule, RuleExecution, WebhookAttempt, WebhookEndpoint, WebhookMessage

    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SET application_name = %s", [WRITER_APP])
        cursor.execute(f"SELECT id FROM {WebhookMessage._meta.db_table} TABLESAMPLE SYSTEM (1) LIMIT 5000")
        old_ids = [row[0] for row in cursor.fetchall()]
    endpoint = WebhookEndpoint.objects.get()
    rule = Rule.objects.get()
    rng = random.Random(index)
    timed = PhaseTimer(phase)
    tenant_id = endpoint.tenant_id

    def record(n: int) -> None:
        """One event processed and sent: its execution, its message claimed, delivered, its attempt."""
        event, _ = timed(lambda: Event.objects.create(tenant_id=tenant_id, type="order.paid", payload={"n": n}))
        timed(lambda: RuleExecution.objects.create(tenant_id=tenant_id, rule=rule, event=event, outcome="succeeded"))
        message, _ = timed(
            lambda: WebhookMessage.objects.create(
                tenant_id=tenant_id, endpoint=endpoint, event=event, event_type=event.type, body="{}", status="sending"
            )
        )
        timed(lambda: WebhookMessage.objects.filter(pk=message.pk).update(status="delivered"))
        timed(lambda: WebhookAttempt.objects.create(tenant_id=tenant_id, message=message, number=1, outcome="success"))

    def old_row() -> None:
        if old_ids:
            target = rng.choice(old_ids)
            timed.old_row(lambda: WebhookMessage.objects.filter(pk=target).update(last_error="replayed"))

    writer_loop(timed, rate, stop, out, record, old_row)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    from apps.core.partitions import partitions_drop_expired
    from apps.core.retention import purge_policy_run
    from apps.events.operations import EVENT_PARTITIONED_TABLES
    from apps.events.services.events import events_retention_policy
    from apps.tenancy.models import Tenant

    loaded = load(args)
    tenant = Tenant.objects.get(pk=loaded["tenant_id"])
    tables = [spec.table for spec in EVENT_PARTITIONED_TABLES]
    purged_run = purge_beside_writers(
        args,
        writer,
        drop=lambda: partitions_drop_expired(tenants=[tenant], tables=tables),
        purge=lambda: purge_policy_run(
            events_retention_policy(), tenants=[tenant], batch_size=args.batch, max_seconds=args.max_seconds
        ),
    )
    dropped, result = purged_run.dropped, purged_run.result
    drop_seconds, seconds = purged_run.drop_seconds, purged_run.seconds

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM events_event e WHERE created_at < now() - interval '30 days' AND EXISTS "
            "(SELECT 1 FROM events_webhookmessage m WHERE m.event_id = e.id AND m.status = 'pending')"
        )
        kept_left = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM events_event WHERE created_at < now() - interval '30 days'")
        old_left = cursor.fetchone()[0]
        orphans = {}
        for table, column, parent in (
            ("events_ruleexecution", "event_id", "events_event"),
            ("events_webhookmessage", "event_id", "events_event"),
            ("events_webhookattempt", "message_id", "events_webhookmessage"),
        ):
            cursor.execute(
                f"SELECT count(*) FROM {table} c WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = c.{column})"
            )
            orphans[table] = cursor.fetchone()[0]
    events_dropped = sum(rows for name, rows in (dropped.dropped if dropped else {}).items())
    cascaded_dropped = sum((dropped.cascaded if dropped else {}).values())
    purged = result.rows + events_dropped
    cascaded = sum(result.cascaded.values()) + cascaded_dropped
    results = {
        "rows": args.rows,
        "batch": args.batch,
        "writers": args.writers,
        "writer_rate_per_second": args.rate,
        "load_seconds": round(loaded["load_seconds"], 1),
        "mode": args.mode,
        "purge": {
            "events_purged": purged,
            "cascaded_rows": cascaded,
            "seconds": round(seconds, 1),
            "complete": result.complete,
            "events_per_second": round(purged / seconds),
            "rows_per_second_with_cascades": round((purged + cascaded) / seconds),
            "partitions": {
                **(dropped.as_dict() if dropped else {}),
                "seconds": round(drop_seconds, 1),
                "events_dropped": events_dropped,
                "cascaded_dropped": cascaded_dropped,
            },
            "events_deleted_in_batches": result.rows,
            "cascaded_in_batches": dict(result.cascaded),
            "in_flight_kept": {"expected": loaded["pending"], "left": kept_left},
            "expired_left": old_left - kept_left,
            "orphans": orphans,
        },
        **writers_summary(purged_run),
    }
    log(
        f"purged {purged:,} events (+{cascaded:,} executions, messages, attempts; {events_dropped:,} by dropping "
        f"partitions in {drop_seconds:.1f} s) in {seconds:.1f} s: {results['purge']['events_per_second']:,} events/s; "
        f"writers p99 {results['writers_baseline']['p99_ms']} ms alone, {results['writers_during_purge']['p99_ms']} ms "
        f"during (max {results['writers_during_purge']['max_ms']} ms); orphans {orphans}"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000, help="Expired events to purge.")
    parser.add_argument("--mode", choices=("delete", "partitions"), default="delete")
    parser.add_argument("--writers", type=int, default=2, help="Concurrent writer processes.")
    parser.add_argument("--rate", type=float, default=10, help="Iterations per second per writer.")
    parser.add_argument("--batch", type=int, default=1000, help="Events per purge batch (the production default).")
    parser.add_argument("--baseline", type=float, default=15, help="Seconds of writers alone, before the purge.")
    parser.add_argument("--max-seconds", type=float, default=600, help="Bound on the batched DELETE.")
    parser.add_argument("--database", default="signalbox_bench_purge_events")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep-db", action="store_true", help="Do not drop the database at the end.")
    args = parser.parse_args()
    configure(args)
    load_before = os.getloadavg()
    log(f"creating database {args.database}")
    database_create(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)
    import django

    django.setup()
    try:
        results = run(args)
    finally:
        if not args.keep_db:
            database_drop(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)
            log(f"dropped database {args.database}")
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(results, indent=2))
    name = f"purge_events_{args.mode}"
    results_compare(name, results, results_write(name, results))


if __name__ == "__main__":
    main()
