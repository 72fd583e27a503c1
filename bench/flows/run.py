"""Flows benchmark: a flow with a delay step over N recipients (a topic), in one process on its own
PostgreSQL database (`signalbox_bench_flows`, created fresh, dropped at the end).

    .venv/bin/python -m bench.flows.run --recipients 100000

Reported: the rows and SQL statements the wait costs (start, entering the delay, each dispatcher
tick while it waits), then the release when the delay ends (delay -> an in-app send, so every run
creates its inbox item): runs/s and statements. Beside it, the baseline in the same run: the same
N in-app deliveries through a plain notification's fan-out (plan + every chunk), in-process too.
No Celery worker runs: both sides are the services the tasks call, so the numbers compare the
database work, not the broker.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import time
from datetime import timedelta
from typing import Any

from bench.common import database_create, database_drop, log


def configure(args: argparse.Namespace) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DEBUG": "0",
            "SIGNALBOX_ALLOW_INSECURE_SETTINGS": "1",
            "SECRET_KEY": "bench-only-secret-key-do-not-deploy-4f1e0c2b9a7d",
            "ALLOWED_HOSTS": "localhost",
            "DATABASE_URL": f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}",
            "LOG_LEVEL": "WARNING",
            # The local Redis (a database of its own) for the live-stream presence lookups; nothing is published.
            "CELERY_BROKER_URL": args.redis,
            "SIGNALBOX_REDIS_URL": args.redis,
        }
    )


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.n += 1
        return execute(sql, params, many, context)


def measure(fn: Any) -> tuple[Any, float, int]:
    from django.db import connection

    counter = Counter()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        value = fn()
    return value, time.perf_counter() - started, counter.n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--database", default="signalbox_bench_flows")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--profile", help="write a cProfile of the release to this file (pstats format)")
    args = parser.parse_args()
    configure(args)
    database_create(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)
    try:
        run(args)
    finally:
        database_drop(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from unittest import mock

    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from apps.flows.models import FlowRun
    from apps.flows.services import engine
    from apps.flows.services.definitions import flow_save
    from apps.notifications.models import Delivery, Topic, TopicMembership
    from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
    from apps.notifications.services.notifications import notification_create
    from apps.notifications.services.recipients import recipients_upsert
    from apps.notifications.services.templates import template_create
    from apps.tenancy.models import Tenant

    n = args.recipients
    log("migrating")
    call_command("migrate", verbosity=0)
    tenant = Tenant.objects.create(name="bench", slug="bench")
    template_create(
        tenant=tenant,
        key="hello",
        definition={
            "category": "general",
            "default_channels": ["in_app"],
            "content": {"default": {"in_app": {"title": "Hi"}}},
        },
    )
    log(f"{n} recipients")
    for start in range(0, n, 10_000):
        recipients_upsert(
            tenant=tenant, items=[{"external_id": f"r-{i}"} for i in range(start, min(n, start + 10_000))]
        )
    topic = Topic.objects.create(tenant=tenant, key="all")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_topicmembership (topic_id, recipient_id, created_at) "
            "SELECT %s, id, now() FROM notifications_recipient WHERE tenant_id = %s",
            [topic.pk, tenant.pk],
        )
    assert TopicMembership.objects.filter(topic=topic).count() == n
    # Statistics, as autovacuum keeps them on a live database: without them the planner takes a
    # chunk's recipients by id (`tenant_id = … AND id = ANY(…)`) through the tenant index, reading
    # the whole audience for each chunk.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE notifications_recipient, notifications_topicmembership")
    flow_save(
        tenant=tenant,
        document={
            "key": "later",
            "template": "hello",
            "steps": [
                {"id": "hour", "type": "delay", "duration": "1h"},
                {"id": "inbox", "type": "send", "channels": ["in_app"]},
            ],
        },
    )
    results: dict[str, Any] = {"recipients": n}
    with mock.patch("apps.core.publish.transaction.on_commit"):  # nothing on a broker: in-process only
        notification = notification_create(tenant=tenant, flow="later", payload={}, topic="all")
        t0 = timezone.now()
        count, secs, stmts = measure(lambda: engine.flow_start(notification_id=notification.pk, now=t0))
        results["start"] = {"runs": count, "seconds": round(secs, 2), "statements": stmts}
        res, secs, stmts = measure(lambda: engine.flows_advance(now=t0, budget_seconds=3600))
        results["enter_delay"] = {
            "runs": res.claimed,
            "chunks": res.chunks,
            "seconds": round(secs, 2),
            "statements": stmts,
        }
        _, secs, stmts = measure(lambda: engine.flows_dispatch_due(now=t0 + timedelta(minutes=30)))
        results["waiting"] = {
            "flow_run_rows": FlowRun.objects.filter(notification_id=notification.pk).count(),
            "dispatcher_tick_statements": stmts,
            "dispatcher_tick_ms": round(secs * 1000, 2),
            "broker_messages": 0,
        }
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size('flows_flowrun')")
            results["waiting"]["flow_run_table_mb"] = round(cursor.fetchone()[0] / 2**20, 1)

        def release() -> Any:
            return engine.flows_advance(now=t0 + timedelta(hours=1, seconds=1), budget_seconds=3600)

        if args.profile:
            profiler = cProfile.Profile()
            res, secs, stmts = measure(lambda: profiler.runcall(release))
            profiler.dump_stats(args.profile)
        else:
            res, secs, stmts = measure(release)
        done = Delivery.objects.filter(notification_id=notification.pk, channel="in_app", status="delivered").count()
        results["release"] = {
            "runs": n,
            "deliveries": done,
            "chunks": res.chunks,
            "seconds": round(secs, 2),
            "runs_per_second": round(n / secs),
            "statements": stmts,
        }
        plain = notification_create(tenant=tenant, template="hello", payload={}, topic="all")

        def fan_out() -> int:
            ids = notification_fan_out(notification_id=plain.pk)
            for pk in ids:
                fanout_chunk_run(chunk_id=pk)
            return len(ids)

        chunks, secs, stmts = measure(fan_out)
        done = Delivery.objects.filter(notification_id=plain.pk, channel="in_app", status="delivered").count()
        results["baseline_plain_fanout"] = {
            "deliveries": done,
            "chunks": chunks,
            "seconds": round(secs, 2),
            "deliveries_per_second": round(done / secs),
            "statements": stmts,
        }
    log(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
