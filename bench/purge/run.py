"""Retention purge benchmark: delete N expired deliveries (and their attempts) while writer
processes keep inserting and updating deliveries, and measure what the writers feel.

    .venv/bin/python -m bench.purge.run --rows 1000000

It creates its own database (`signalbox_bench_purge`, dropped at the end unless `--keep-db`),
migrates it, and loads, with one SQL statement each: recipients, old notifications, `--rows`
deliveries 31-90 days old (1% of them still `queued`, which must survive) with one attempt each.
Then, in order:

1. baseline: `--writers` processes write for `--baseline` seconds with nothing else running. Each
   iteration (at most `--rate` per second per writer) is, every statement timed on its own
   (autocommit): INSERT a notification, INSERT 50 deliveries, UPDATE those 50 (as the send
   pipeline records results) and, every fifth iteration, UPDATE one *old* delivery (a replay of
   an expired row: the case that can meet the purge's row locks);
2. purge: the production `deliveries` policy (apps/notifications/operations.py) through
   `purge_policy_run`, batches of `--batch`, while the writers keep writing. A sampler polls
   pg_stat_activity every 50 ms for writer statements waiting on a lock.

`--mode delete` (the default) purges with the batched DELETE alone; `--mode partitions` first drops
the monthly partitions whose rows are all expired (apps/core/partitions.py), then lets the batched
DELETE take what is left (the partitions holding an in-flight row). Both load the same data: the
notifications spread over four months, 150 to 60 days old, with UUIDv7 ids of their time, so their
deliveries land in those months' partitions; the in-flight rows only in the newest 5 days of
them. Every retention is set to 30 days (`SIGNALBOX_RETENTION_*_DAYS`), so a partition is past
the longest retention once its month is more than 30 days old.

Reported: rows purged per second (deliveries, and all rows with the cascaded attempts), writer
statement latency (p50 / p99 / max) in the baseline and during the purge, the longest lock wait
the sampler saw, that every in-flight row survived, and the machine's load average. Written to
`bench/results/purge_<mode>.json` and compared with the previous run of that mode.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import bench_environment, database_create, database_drop, log, results_compare, results_write

ROOT = Path(__file__).resolve().parents[2]
WRITER_APP = "bench-purge-writer"


def configure(args: argparse.Namespace) -> None:
    """Environment for this process and the writers it forks (read by project/settings.py)."""
    os.environ.update(
        bench_environment(
            database_url=f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}",
            broker_url=args.redis,
            prefix="sbxbenchpurge",
            # One retention for every delivery policy: the longest decides when a partition may go.
            SIGNALBOX_RETENTION_DELIVERIES_DAYS="30",
            SIGNALBOX_RETENTION_INBOX_READ_DAYS="30",
            SIGNALBOX_RETENTION_INBOX_UNREAD_DAYS="30",
        )
    )
    sys.path.insert(0, str(ROOT))


def create_database(args: argparse.Namespace) -> None:
    database_create(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)


def drop_database(args: argparse.Namespace) -> None:
    database_drop(args.database, host=args.pg_host, port=args.pg_port, user=args.pg_user)


# --- Loading -----------------------------------------------------------------------------------


def _select_list(model: Any, overrides: dict[str, Any]) -> tuple[str, str, list[Any]]:
    from django.db.models.fields import AutoFieldMixin

    """(columns, select expressions, params) for INSERT … SELECT into `model`. `overrides` maps a
    column to an SQL expression, or to (expression, params); every other column gets its Django
    default, so a column added to the model later needs no change here."""
    columns, expressions, params = [], [], []
    for f in model._meta.concrete_fields:
        if f.column not in overrides and isinstance(f, AutoFieldMixin):
            continue  # the sequence fills it
        columns.append(f.column)
        if f.column in overrides:
            expression, values = overrides[f.column], []
            if isinstance(expression, tuple):
                expression, values = expression
            expressions.append(expression)
            params.extend(values)
        elif f.null:
            expressions.append("NULL")
        else:
            value = f.get_default()
            if isinstance(value, dict | list):
                expressions.append("%s::jsonb")
                params.append(json.dumps(value))
            else:
                expressions.append("%s")
                params.append(value)
    return ", ".join(columns), ", ".join(expressions), params


def load(args: argparse.Namespace) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from apps.core.partitions import partitions_ensure, uuid7_floor
    from apps.notifications.models import Delivery, DeliveryAttempt, Notification, Recipient
    from apps.notifications.services.templates import template_create
    from apps.tenancy.services import tenant_create

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    tenant = tenant_create(slug="bench", name="Bench")
    template = template_create(
        tenant=tenant,
        key="statement",
        definition={
            "variables": ["n"],
            "default_channels": ["email"],
            "content": {"default": {"email": {"subject": "Statement {{ n }}", "text": "Your statement {{ n }}."}}},
        },
    )
    recipients = args.recipients
    notifications = -(-args.rows // recipients)
    with connection.cursor() as cursor:
        cols, exprs, params = _select_list(
            Recipient,
            {
                "tenant_id": ("%s", [tenant.pk]),
                "external_id": "'r-' || g",
                "email": "'r' || g || '@example.com'",
                "created_at": "now()",
                "updated_at": "now()",
            },
        )
        cursor.execute(
            f"INSERT INTO {Recipient._meta.db_table} ({cols}) SELECT {exprs} FROM generate_series(1, %s) g",
            [*params, recipients],
        )
    now = timezone.now()
    oldest = now - timedelta(days=150)
    partitions_ensure(now=oldest, ahead=8)  # the months of the data (the migration made today's onwards)
    made_at = [oldest + timedelta(days=90) * n / notifications for n in range(notifications)]
    Notification.objects.bulk_create(
        [
            Notification(
                id=uuid.UUID(int=uuid7_floor(at).int | random.getrandbits(62)),
                tenant=tenant,
                template=template,
                template_version=template.current_version,
                category=template.category,
                payload={"n": n},
                channels=["email"],
                status=Notification.Status.COMPLETED,
            )
            for n, at in enumerate(made_at)
        ]
    )
    for notification in Notification.objects.filter(tenant=tenant).only("pk"):  # past auto_now_add
        at = datetime.fromtimestamp((notification.pk.int >> 80) / 1000, tz=UTC)
        Notification.objects.filter(pk=notification.pk).update(created_at=at)
    log(f"loading {args.rows:,} expired deliveries (1% of the newest 5 days still queued) with one attempt each")
    with connection.cursor() as cursor:
        cols, exprs, params = _select_list(
            Delivery,
            {
                # A UUIDv7 of its creation time, as uuid7() makes them.
                "id": "(lpad(to_hex((extract(epoch FROM n.at) * 1000)::bigint), 12, '0') || '7' "
                "|| substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid",
                "tenant_id": "n.tenant_id",
                "notification_id": "n.id",
                "recipient_id": "r.id",
                "channel": "'email'",
                "status": "CASE WHEN r.id %% 100 = 0 AND n.created_at > now() - interval '65 days' "
                "THEN 'queued' ELSE 'sent' END",
                "template_version_id": "n.template_version_id",
                "attempts": "1",
                "provider": "'sink'",
                "created_at": "n.at",
                "sent_at": "n.at",
            },
        )
        cursor.execute(
            f"INSERT INTO {Delivery._meta.db_table} ({cols}) SELECT {exprs} "
            f"FROM (SELECT id, tenant_id, template_version_id, created_at, "
            f"created_at + random() * interval '1 hour' AS at FROM {Notification._meta.db_table} "
            "ORDER BY id) n CROSS JOIN (SELECT id FROM notifications_recipient ORDER BY id) r LIMIT %s",
            [*params, args.rows],
        )
        cols, exprs, params = _select_list(
            DeliveryAttempt,
            {
                "delivery_id": "d.id",
                "number": "1",
                "provider": "'sink'",
                "outcome": "'accepted'",
                "latency_ms": "12",
                "created_at": "d.created_at",
            },
        )
        cursor.execute(
            f"INSERT INTO {DeliveryAttempt._meta.db_table} ({cols}) SELECT {exprs} FROM {Delivery._meta.db_table} d",
            params,
        )
        cursor.execute("VACUUM ANALYZE notifications_delivery")
        cursor.execute("VACUUM ANALYZE notifications_deliveryattempt")
        cursor.execute("SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FROM notifications_delivery")
        queued, total = cursor.fetchone()
    log(f"loaded {total:,} deliveries ({queued:,} queued) in {time.monotonic() - started:.0f} s")
    return {
        "tenant_id": str(tenant.pk),
        "queued": queued,
        "deliveries": total,
        "load_seconds": time.monotonic() - started,
    }


# --- Writers -----------------------------------------------------------------------------------


@dataclass
class WriterStats:
    baseline: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    during_drop: list[float] = field(default_factory=list)
    old_row_updates: list[float] = field(default_factory=list)
    statements: int = 0


class PhaseTimer:
    """Times a writer's statements into the phase they ran in: 0 writers alone, 1 the purge's
    batched DELETE, 3 the partition drops (counted in `during` too), 2 the end."""

    def __init__(self, phase: Any) -> None:
        self.phase = phase
        self.stats = WriterStats()

    def __call__(self, run: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        value = run()
        elapsed = time.perf_counter() - started
        if self.phase.value == 3:
            self.stats.during_drop.append(elapsed)
        (self.stats.during if self.phase.value in (1, 3) else self.stats.baseline).append(elapsed)
        self.stats.statements += 1
        return value, elapsed

    def old_row(self, run: Any) -> None:
        """An update of an expired row (a replay): what a drop's lock would hold up."""
        _, elapsed = self(run)
        if self.phase.value in (1, 3):
            self.stats.old_row_updates.append(elapsed)


def writer_loop(timer: PhaseTimer, rate: float, stop: Any, out: Any, record: Any, old_row: Any) -> None:
    """`record(iteration)` at `rate` per second, and `old_row()` every fifth, until the end phase."""
    iteration = 0
    while not stop.is_set():
        tick = time.monotonic()
        iteration += 1
        record(iteration)
        if iteration % 5 == 0:
            old_row()
        if timer.phase.value == 2:
            break
        pause = 1 / rate - (time.monotonic() - tick)
        if pause > 0:
            time.sleep(pause)
    out.put(asdict(timer.stats))


def writer(index: int, rate: float, phase: Any, stop: Any, out: Any) -> None:
    """One writer process: its own connection, timing each statement."""
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from apps.notifications.models import Delivery, Notification, Recipient, Template, uuid7

    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SET application_name = %s", [WRITER_APP])
        cursor.execute("SELECT id FROM notifications_delivery TABLESAMPLE SYSTEM (1) LIMIT 5000")
        old_ids = [row[0] for row in cursor.fetchall()]
    template = Template.objects.select_related("current_version", "category").get(key="statement")
    recipient_ids = list(Recipient.objects.values_list("pk", flat=True)[:50])
    rng = random.Random(index)
    timed = PhaseTimer(phase)

    def record(iteration: int) -> None:
        now = timezone.now()
        notification = Notification(
            tenant_id=template.tenant_id,
            template=template,
            template_version=template.current_version,
            category=template.category,
            payload={"n": iteration},
            channels=["email"],
            status=Notification.Status.DISPATCHED,
        )
        timed(notification.save)
        rows = [
            Delivery(
                id=uuid7(),
                tenant_id=template.tenant_id,
                notification_id=notification.pk,
                recipient_id=rid,
                channel="email",
                status="queued",
                queued_at=now,
                created_at=now,
            )
            for rid in recipient_ids
        ]
        timed(lambda: Delivery.objects.bulk_create(rows))
        ids = [r.id for r in rows]
        timed(lambda: Delivery.objects.filter(pk__in=ids).update(status="sent", sent_at=timezone.now()))

    def old_row() -> None:
        if old_ids:
            target = rng.choice(old_ids)
            timed.old_row(lambda: Delivery.objects.filter(pk=target).update(last_error="replayed"))

    writer_loop(timed, rate, stop, out, record, old_row)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "statements": len(values),
        "p50_ms": round(_percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values, default=0) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else 0.0,
    }


class LockSampler(threading.Thread):
    """Polls pg_stat_activity for writer statements waiting on a lock; keeps the longest wait seen."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(daemon=True)
        self.args = args
        self.stop = threading.Event()
        self.longest = 0.0
        self.waits_seen = 0

    def run(self) -> None:
        import psycopg

        with psycopg.connect(
            host=self.args.pg_host, port=self.args.pg_port, user=self.args.pg_user, dbname=self.args.database,
            autocommit=True,
        ) as conn:  # fmt: skip
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT extract(epoch FROM clock_timestamp() - query_start) FROM pg_stat_activity "
                    "WHERE application_name = %s AND wait_event_type = 'Lock'",
                    [WRITER_APP],
                ).fetchall()
                for (seconds,) in rows:
                    self.waits_seen += 1
                    self.longest = max(self.longest, float(seconds))
                time.sleep(0.05)


# --- The run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Expired deliveries to purge.")
    parser.add_argument(
        "--mode", choices=("delete", "partitions"), default="delete",
        help="delete: batched DELETE only; partitions: drop expired partitions, then DELETE the rest.",
    )  # fmt: skip
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=2, help="Concurrent writer processes.")
    parser.add_argument("--rate", type=float, default=10, help="Iterations per second per writer (50 rows each).")
    parser.add_argument("--batch", type=int, default=1000, help="Rows per purge batch (the production default).")
    parser.add_argument("--baseline", type=float, default=15, help="Seconds of writers alone, before the purge.")
    parser.add_argument("--database", default="signalbox_bench_purge")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep-db", action="store_true", help="Do not drop the database at the end.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    configure(args)
    load_before = os.getloadavg()
    log(f"creating database {args.database}")
    create_database(args)
    import django

    django.setup()
    try:
        results = run(args)
    finally:
        if not args.keep_db:
            drop_database(args)
            log(f"dropped database {args.database}")
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(results, indent=2))
    name = f"purge_{args.mode}"
    results_compare(name, results, results_write(name, results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


@dataclass
class Purged:
    """What a purge beside the writers did and what the writers felt."""

    dropped: Any  # the partition drops' report, None in delete mode
    result: Any  # the batched DELETE's report
    drop_seconds: float
    seconds: float
    stats: list[dict[str, Any]]  # one WriterStats (as a dict) per writer
    longest_lock_wait: float
    lock_waits: int

    def writers(self, key: str) -> list[float]:
        return [x for s in self.stats for x in s[key]]


def purge_beside_writers(args: argparse.Namespace, writer: Any, drop: Any, purge: Any) -> Purged:
    """Starts `args.writers` writer processes, lets them write alone for `args.baseline` seconds,
    then runs `drop()` (partitions mode) and `purge()` while they write, sampling lock waits."""
    from django.db import connections

    connections.close_all()  # the writers fork: never share a connection
    context = multiprocessing.get_context("fork")
    phase = context.Value("i", 0)
    stop = context.Event()
    out = context.Queue()
    writers = [context.Process(target=writer, args=(i, args.rate, phase, stop, out)) for i in range(args.writers)]
    for process in writers:
        process.start()
    log(f"{args.writers} writers running; baseline for {args.baseline:.0f} s")
    time.sleep(args.baseline)

    sampler = LockSampler(args)
    sampler.start()
    phase.value = 3 if args.mode == "partitions" else 1
    log(f"purging ({args.mode}; batches of {args.batch:,}) while the writers write")
    started = time.monotonic()
    dropped = drop() if args.mode == "partitions" else None
    drop_seconds = time.monotonic() - started
    phase.value = 1
    result = purge()
    seconds = time.monotonic() - started
    phase.value = 2
    stop.set()
    sampler.stop.set()
    stats = [out.get(timeout=60) for _ in writers]
    for process in writers:
        process.join(timeout=30)
    sampler.join(timeout=5)
    return Purged(dropped, result, drop_seconds, seconds, stats, sampler.longest, sampler.waits_seen)


def writers_summary(purged: Purged) -> dict[str, Any]:
    return {
        "writers_baseline": _summary(purged.writers("baseline")),
        "writers_during_purge": _summary(purged.writers("during")),
        "writers_during_partition_drops": _summary(purged.writers("during_drop")),
        "old_row_updates_during_purge": _summary(purged.writers("old_row_updates")),
        "longest_lock_wait_sampled_ms": round(purged.longest_lock_wait * 1000, 1),
        "lock_waits_sampled": purged.lock_waits,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    from apps.core.partitions import partitions_drop_expired
    from apps.core.retention import purge_policy_run, shared_purge_policies
    from apps.notifications.models import DeliveryAttempt
    from apps.tenancy.models import Tenant

    loaded = load(args)
    (policy,) = [p for p in shared_purge_policies() if p.name == "deliveries"]
    tenant = Tenant.objects.get(pk=loaded["tenant_id"])
    purged_run = purge_beside_writers(
        args,
        writer,
        drop=lambda: partitions_drop_expired(tenants=[tenant]),
        purge=lambda: purge_policy_run(policy, tenants=[tenant], batch_size=args.batch),
    )
    dropped, result = purged_run.dropped, purged_run.result
    drop_seconds, seconds = purged_run.drop_seconds, purged_run.seconds

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM notifications_delivery WHERE created_at < now() - interval '30 days' "
            "AND status = 'queued'"
        )
        queued_left = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM notifications_delivery WHERE created_at < now() - interval '30 days'")
        old_left = cursor.fetchone()[0]
    by_drop = {"deliveries": 0, "attempts": 0}
    for name, rows in (dropped.dropped if dropped else {}).items():
        by_drop["attempts" if name.startswith(DeliveryAttempt._meta.db_table) else "deliveries"] += rows
    cascaded = sum(result.cascaded.values()) + by_drop["attempts"]
    purged = result.rows + by_drop["deliveries"]
    results = {
        "rows": args.rows,
        "batch": args.batch,
        "writers": args.writers,
        "writer_rate_per_second": args.rate,
        "load_seconds": round(loaded["load_seconds"], 1),
        "mode": args.mode,
        "purge": {
            "deliveries_deleted": purged,
            "cascaded": dict(result.cascaded),
            "seconds": round(seconds, 1),
            "deliveries_per_second": round(purged / seconds),
            "rows_per_second_with_cascades": round((purged + cascaded) / seconds),
            "partitions": {
                **(dropped.as_dict() if dropped else {}),
                "seconds": round(drop_seconds, 1),
                "deliveries_dropped": by_drop["deliveries"],
                "attempts_dropped": by_drop["attempts"],
            },
            "deliveries_deleted_in_batches": result.rows,
            "in_flight_kept": {"expected": loaded["queued"], "left": queued_left},
            "expired_left": old_left - queued_left,
        },
        **writers_summary(purged_run),
    }
    log(
        f"purged {purged:,} deliveries (+{cascaded:,} attempts; {by_drop['deliveries']:,} by dropping partitions "
        f"in {drop_seconds:.1f} s) in {seconds:.1f} s: "
        f"{results['purge']['deliveries_per_second']:,} deliveries/s; writers p99 "
        f"{results['writers_baseline']['p99_ms']} ms alone, {results['writers_during_purge']['p99_ms']} ms during "
        f"(max {results['writers_during_purge']['max_ms']} ms); longest lock wait sampled "
        f"{results['longest_lock_wait_sampled_ms']} ms"
    )
    return results


if __name__ == "__main__":
    main()
