"""The send step alone: the `sink` adapter's batches run in this process, timed by CPU.

The end-to-end benchmark (`bench.email.run`) times the whole pipeline by the wall clock, which on
a shared machine swings by 2-3x between runs minutes apart. This one fans a notification out to N
recipients in this process (its send messages are not published), then sends the queued
deliveries in batches by calling the send service directly, and reports per delivery: this
process's CPU (user + system: the pipeline's own Python and driver work, not PostgreSQL's), the
wall time, and SQL statements. CPU time is what a worker spends, and moves much less with load.

    .venv/bin/python -m bench.email.sendpath --emails 20000 [--old-messages] [--profile out.prof]

`--old-messages`: send batches as a message from before notification ids were carried (delivery
ids only), whose claim probes every partition. It also prints the claim's plan (EXPLAIN): how
many partitions of `notifications_delivery` it scans with and without the notifications named.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import os
import time
from typing import Any

from bench.fanout.run import configure, ensure_database, reset_pipeline_tables


def explain_claim(delivery_ids: list[str], notification_ids: list[str]) -> dict[str, int]:
    """Partitions the claim's UPDATE scans, without and with its notifications named (rolled back)."""
    from django.db import connection, transaction

    from apps.notifications.models import Delivery

    counts = {}
    for label, prune in (("ids only", ""), ("with notification ids", " AND notification_id = ANY(%s::uuid[])")):
        params: list[Any] = ["{" + ",".join(delivery_ids) + "}"]
        if prune:
            params.append("{" + ",".join(notification_ids) + "}")
        sql = (
            f"EXPLAIN UPDATE {Delivery._meta.db_table} SET status = 'sending' "
            f"WHERE id = ANY(%s::uuid[]) AND status = 'queued'{prune}"
        )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            transaction.set_rollback(True)
        counts[label] = plan.count(f"Update on {Delivery._meta.db_table}_") or sum(
            1 for line in plan.splitlines() if "Scan" in line and f"{Delivery._meta.db_table}_" in line
        )
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=20000)
    parser.add_argument("--send-batch", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--database", default="signalbox_bench_email")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--old-messages", action="store_true", help="Batches without their notification ids.")
    parser.add_argument("--profile", default="", help="Write a cProfile of the sends to this file.")
    args = parser.parse_args()
    configure(args)
    ensure_database(args)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.notifications.models import Delivery, FanoutChunk
    from apps.notifications.services import fanout, notifications, sending
    from bench.email.run import CONTENT, tenant_for

    call_command("migrate", verbosity=0)
    # Nothing is published: this process runs the fan-out and the sends itself.
    for module in (fanout, notifications, sending):
        if hasattr(module, "publish_on_commit"):
            module.publish_on_commit = lambda *a, **k: None  # type: ignore[attr-defined]
    tenant = tenant_for("sink", None, args.emails)
    reset_pipeline_tables()
    notification = notifications.notification_create(
        tenant=tenant,
        content=CONTENT,
        category="statements",
        payload={"period": "2030-01"},
        topic="all",
        channels=["email"],
        priority="bulk",
    )
    fanout.notification_fan_out(notification_id=str(notification.pk))
    for chunk_id in FanoutChunk.objects.filter(notification=notification).values_list("pk", flat=True):
        fanout.fanout_chunk_run(chunk_id=chunk_id)
    ids = [
        str(pk)
        for pk in Delivery.objects.filter(notification=notification, status="queued").values_list("pk", flat=True)
    ]
    batches = [ids[i : i + args.send_batch] for i in range(0, len(ids), args.send_batch)]
    carries = "notification_ids" in inspect.signature(sending.deliveries_send).parameters
    kwargs: dict[str, Any] = {} if args.old_messages or not carries else {"notification_ids": [str(notification.pk)]}
    print(f"{len(ids):,} deliveries queued; {len(batches)} batches; notification ids carried: {bool(kwargs)}")
    print("claim plan, partitions scanned:", explain_claim(batches[0], [str(notification.pk)]))
    profiler = cProfile.Profile() if args.profile else None
    load = os.getloadavg()[0]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    statements = [0]

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):  # counted as the workers count them (no debug capture)
        for batch in batches:
            if profiler:
                profiler.enable()
            sending.deliveries_send(delivery_ids=batch, queue="notifications.bulk", **kwargs)
            if profiler:
                profiler.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    sent = Delivery.objects.filter(notification=notification, status="sent").count()
    if profiler:
        profiler.dump_stats(args.profile)
    print(
        f"sent {sent:,}: CPU {cpu * 1e6 / len(ids):.0f} µs/delivery (this process), wall {wall * 1e6 / len(ids):.0f} "
        f"µs/delivery ({len(ids) / wall:,.0f}/s on one process), {statements[0] / len(ids):.4f} statements/delivery, "
        f"load {load:.2f} -> {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
