"""The peer run of the fan-out benchmark: django-notifications-community (the maintained community
fork of django-notifications-hq, on PyPI) writing one in-app notification row per recipient, in
the same process layout as the pipeline: a Celery prefork worker (`--concurrency`, 2) on the same
PostgreSQL and Redis, one task per chunk of `--chunk-size` recipients, each chunk in one
transaction (`notify.send` with a list of users: one `bulk_create` per chunk).

    .venv/bin/python -m bench.fanout.peer --recipients 100000

The package is installed with `pip install --target` into a directory of its own under TMPDIR
(never into the project's virtualenv), and it runs under Django settings of its own
(`bench.fanout.peer_settings`: its app label `notifications` is also ours) in a database of its
own. Prints one JSON object: rows, seconds, rows/s, peak worker RSS. run.py calls it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import CpuMeter

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("django-notifications-community==1.12.3",)  # it needs only Django (the venv's)
TARGET = Path(os.environ.get("TMPDIR", "/tmp")) / "signalbox-bench-peer-packages"


def install() -> Path:
    """The peer package, beside (not in) the project's virtualenv."""
    if not (TARGET / "notifications" / "__init__.py").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(TARGET), *PACKAGES],
            check=True,
        )
    return TARGET


def configure(args: argparse.Namespace) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.fanout.peer_settings",
            "PEER_DATABASE": args.database,
            "PEER_PG": f"{args.pg_host}:{args.pg_port}:{args.pg_user}",
            "PEER_BROKER": args.redis,
            "PEER_PREFIX": f"sbxpeer:{os.getpid()}:",
            "PYTHONPATH": os.pathsep.join([str(install()), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
    )
    sys.path[:0] = [str(TARGET), str(ROOT)]


def rows_key() -> str:
    """Rows committed so far (the tasks count them), under this run's key prefix."""
    return f"{os.environ['PEER_PREFIX']}rows"


# --- The worker side --------------------------------------------------------------------------


def celery_app() -> Any:
    import django
    import redis
    from celery import Celery

    django.setup()
    app = Celery("peer", broker=os.environ["PEER_BROKER"])
    app.conf.update(
        broker_transport_options={"global_keyprefix": os.environ["PEER_PREFIX"]},
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
    )

    @app.task(name="bench.peer.notify_chunk")
    def notify_chunk(low: int, high: int) -> int:
        from django.contrib.auth import get_user_model
        from django.db import transaction
        from notifications.signals import notify

        users = get_user_model().objects
        actor = users.get(username="bench-actor")
        with transaction.atomic():
            recipients = list(users.filter(pk__gte=low, pk__lt=high, is_active=True).order_by("pk"))
            notify.send(
                actor,
                recipient=recipients,
                verb="Statement 2030-01 is ready",
                description="Open it to see the details.",
                action_url="/statements/2030-01",
            )
        # Counted after commit, for the driver's clock (a COUNT(*) every 20 ms would load the database).
        redis.Redis.from_url(os.environ["PEER_BROKER"]).incrby(rows_key(), len(recipients))
        return len(recipients)

    return app


# --- The driver side --------------------------------------------------------------------------


def prepare(size: int) -> list[int]:
    """Migrates, creates `size` users (and the actor) if missing; the first user id of each chunk."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from notifications.models import Notification

    call_command("migrate", verbosity=0)
    users = get_user_model()
    users.objects.get_or_create(username="bench-actor")
    have = users.objects.exclude(username="bench-actor").count()
    if have < size:
        users.objects.bulk_create(
            [users(username=f"r{i:07d}", email=f"r{i:07d}@example.com") for i in range(have, size)], batch_size=10000
        )
    Notification.objects.all().delete()
    return list(users.objects.exclude(username="bench-actor").order_by("pk").values_list("pk", flat=True)[:size])


def worker_processes(pid: int) -> list[Any]:
    import psutil

    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import psutil
    import redis
    from django.db import connection
    from notifications.models import Notification

    ids = prepare(args.recipients)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("CHECKPOINT")
    app = celery_app()
    name = f"peer-{uuid.uuid4().hex[:8]}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"signalbox-bench-peer-{os.getpid()}.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.fanout.peer_worker", "worker", "-c", str(args.concurrency),
         "-P", "prefork", "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat",
         "-l", "WARNING"],
        cwd=ROOT, env=os.environ.copy(), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    peak = 0
    try:
        deadline = time.monotonic() + 60
        while not any(name in next(iter(r)) for r in app.control.ping(timeout=0.5) or []):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the peer worker did not start; see {log}")
        counter = redis.Redis.from_url(os.environ["PEER_BROKER"])
        counter.set(rows_key(), 0)
        meter = CpuMeter(connection.cursor(), lambda: [p.pid for p in worker_processes(worker.pid)])
        meter.start()
        load_before = round(os.getloadavg()[0], 2)
        started = time.perf_counter()
        bounds = ids[:: args.chunk_size]
        for i, low in enumerate(bounds):
            high = bounds[i + 1] if i + 1 < len(bounds) else ids[-1] + 1
            app.send_task("bench.peer.notify_chunk", (low, high))
        deadline = time.monotonic() + args.timeout
        done, sampled = 0, 0.0
        while done < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"the peer wrote {done} of {len(ids)} rows in {args.timeout} s; see {log}")
            if time.perf_counter() - sampled > 0.25:
                sampled = time.perf_counter()
                for process in worker_processes(worker.pid):
                    with contextlib.suppress(psutil.Error):
                        peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)  # as often as run.py looks at the pipeline's notification
            done = int(counter.get(rows_key()) or 0)
        elapsed = time.perf_counter() - started
        cpu = meter.read()
        done = Notification.objects.count()  # the rows themselves, not the tasks' word for them
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return {
        "name": f"peer: django-notifications-community {args.recipients:,}",
        "recipients": len(ids),
        "rows": done,
        "seconds": round(elapsed, 3),
        "rate": round(done / elapsed),
        "peak_worker_rss_mb": round(peak / 2**20, 1),
        "load_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--database", default="signalbox_bench_peer")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    configure(args)
    import psycopg

    with psycopg.connect(
        host=args.pg_host, port=args.pg_port, user=args.pg_user, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.database]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{args.database}"')
    import django

    django.setup()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
