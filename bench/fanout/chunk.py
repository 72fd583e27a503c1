"""CPU of one fan-out chunk in this process: Python (this process) and PostgreSQL (its backend),
for an in-app notification to the bench topic, chunk by chunk, with no worker or broker.

    .venv/bin/python -m bench.fanout.chunk --recipients 100000 --chunks 6

Uses the fan-out benchmark's database and data (bench/fanout/run.py's `prepare`); its pipeline
tables are emptied first. Reported per chunk: rows, wall ms, Python CPU ms, backend CPU ms, and
their sum per row in µs (the best and the median of the chunks), with the load average.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any
from unittest import mock

from bench.common import log
from bench.fanout.run import TEMPLATE_KEY, configure, ensure_database, prepare, reset_pipeline_tables


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100000)
    parser.add_argument("--chunks", type=int, default=6, help="How many chunks to run (the first is a warm-up).")
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--send-batch", type=int, default=500)
    parser.add_argument("--channels", default="in_app")
    parser.add_argument("--database", default="signalbox_bench")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--profile", type=Path, help="Write a cProfile of the measured chunks here.")
    args = parser.parse_args()
    configure(args)
    ensure_database(args)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from apps.notifications.models import Delivery, FanoutChunk, Notification
    from apps.notifications.services import fanout
    from apps.notifications.services import notifications as notifications_service
    from apps.notifications.services.notifications import notification_create

    call_command("migrate", verbosity=0)
    tenant, _ = prepare([args.recipients])
    reset_pipeline_tables()
    with mock.patch.object(notifications_service, "_publish_fan_out"), transaction.atomic():
        notification = notification_create(
            tenant=tenant,
            template=TEMPLATE_KEY,
            payload={"period": "2030-01"},
            topic=f"first-{args.recipients}",
            priority="bulk",
            channels=args.channels.split(","),
        )
    with transaction.atomic():
        chunks, total = fanout._plan_chunks(notification, args.chunk_size)
        FanoutChunk.objects.bulk_create(chunks)
        Notification.objects.filter(pk=notification.pk).update(
            status=Notification.Status.FANNING_OUT, chunks_total=len(chunks), recipient_count=total
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = int(cursor.fetchone()[0])
    profiler = cProfile.Profile() if args.profile else None
    gc.collect()
    gc.freeze()  # as the workers do (workers/signals.py)
    results: list[dict[str, Any]] = []
    for chunk in chunks[: args.chunks]:
        before_rows = Delivery.objects.count()
        wall, py, pg = time.perf_counter(), time.process_time(), _backend_cpu(backend)
        if profiler is not None and chunk.index > 0:
            profiler.enable()
        fanout.fanout_chunk_run(chunk_id=chunk.pk)
        if profiler is not None:
            profiler.disable()
        wall, py, pg = time.perf_counter() - wall, time.process_time() - py, _backend_cpu(backend) - pg
        rows = Delivery.objects.count() - before_rows
        results.append({"rows": rows, "wall_ms": wall * 1e3, "py_ms": py * 1e3, "pg_ms": pg * 1e3})
        log(
            f"chunk {chunk.index}: {rows} rows, {wall * 1e3:.0f} ms wall, {py * 1e3:.0f} ms Python, "
            f"{pg * 1e3:.0f} ms PostgreSQL"
        )
    if profiler is not None:
        profiler.dump_stats(args.profile)
    measured = results[1:] or results
    per_row = [(r["py_ms"] + r["pg_ms"]) * 1e3 / max(r["rows"], 1) for r in measured]
    py_row = [r["py_ms"] * 1e3 / max(r["rows"], 1) for r in measured]
    pg_row = [r["pg_ms"] * 1e3 / max(r["rows"], 1) for r in measured]
    log(
        f"per row (chunks after the first): total best {min(per_row):.1f} / "
        f"median {statistics.median(per_row):.1f} µs; "
        f"Python median {statistics.median(py_row):.1f} µs, PostgreSQL median {statistics.median(pg_row):.1f} µs; "
        f"load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
