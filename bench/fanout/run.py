"""Fan-out benchmark: one notification to N recipients on two channels (in-app + email through the
sink adapter), on PostgreSQL and Redis with real Celery workers, beside a naive baseline and the
raw COPY ceiling.

    .venv/bin/python -m bench.fanout.run --recipients 100000

It uses its own database (`signalbox_bench`, created and migrated if missing) and its own Redis
database number and key prefix, so it never touches development or test data. Phases, in one run:

1. pipeline at a small audience (`--small`, 10,000) and at `--recipients`: POST /api/v1/notifications/
   with a topic, then wait for the last delivery. Reported: deliveries/s end to end (POST to the
   last delivery recorded), deliveries/s of fan-out alone (POST to every delivery row written; the
   in-app ones are final by then), SQL statements per delivery (every statement of every worker
   process, counted by an execute wrapper, plus the POST's), and peak RSS of the worker processes;
2. the naive baseline on `--naive` recipients (2,500, so 5,000 deliveries, or what it gets through
   in `--naive-seconds`): one Celery task per delivery saving rows one by one with the ORM, same
   renderer and adapter;
3. the ceiling: one COPY of as many delivery rows as phase 1 wrote into the same table, with its
   indexes and foreign keys (best of two);
4. the peer (`--skip-peer` to leave it out): in-app rows only, `--recipients` of them, by the
   pipeline (a notification on the in-app channel alone) and by django-notifications-community
   (bench/fanout/peer.py) with the same worker processes, chunk size, PostgreSQL and Redis; each
   also reported as CPU seconds of its workers and their PostgreSQL backends (`cpu_s`, which the
   machine's load barely moves), and beside the COPY of as many in-app rows in one stream and in
   one stream per worker process: the most the database takes of those rows on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import CpuMeter, bench_environment, log, results_compare, results_write

ROOT = Path(__file__).resolve().parents[2]
QUEUES = "notifications.high,notifications.default,notifications.bulk,maintenance"
TEMPLATE_KEY = "bench_statement"


@dataclass
class Result:
    name: str
    recipients: int
    deliveries: int
    seconds: float
    rate: float
    fanout_seconds: float | None = None
    fanout_rate: float | None = None
    queries: int | None = None
    queries_per_delivery: float | None = None
    peak_worker_rss_mb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def configure(args: argparse.Namespace) -> None:
    """Environment for this process and the workers it starts (read by project/settings.py)."""
    os.environ.update(
        bench_environment(
            database_url=f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.database}",
            broker_url=args.redis,
            prefix="sbxbench",
            BENCH_REDIS_URL=args.redis,
            BENCH_COUNTER_KEY=f"sbxbench:{os.getpid()}:queries",
            NOTIFICATIONS_FANOUT_CHUNK_SIZE=str(args.chunk_size),
            NOTIFICATIONS_SEND_BATCH_SIZE=str(args.send_batch),
        )
    )
    sys.path.insert(0, str(ROOT))


def ensure_database(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(
        host=args.pg_host, port=args.pg_port, user=args.pg_user, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.database]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{args.database}"')


# --- Workers -----------------------------------------------------------------------------------


class Worker:
    """A Celery worker subprocess on the notification queues, with its memory watched."""

    def __init__(self, concurrency: int, log_path: Path) -> None:
        self.concurrency = concurrency
        self.log_path = log_path
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0

    def start(self) -> None:
        from workers.celery import app

        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "bench.fanout.worker_app", "worker",
                "-Q", QUEUES, "-c", str(self.concurrency), "-P", "prefork", "-n", f"{self.name}@%h",
                "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "WARNING",
            ],
            cwd=ROOT, env=os.environ.copy(), stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the worker exited at start; see {self.log_path}")
            if any(self.name in next(iter(r)) for r in app.control.ping(timeout=0.5) or []):
                return
        raise SystemExit(f"the worker did not answer within 60 s; see {self.log_path}")

    def processes(self) -> list[Any]:
        import psutil

        assert self.proc is not None
        parent = psutil.Process(self.proc.pid)
        return [parent, *parent.children(recursive=True)]

    def sample(self) -> None:
        """Tracks the largest resident size of any worker process seen so far."""
        import psutil

        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)

    def high_water_mark(self) -> int:
        """The kernel's own per-process peak (VmHWM), which also catches spikes between samples."""
        peak = self.peak_rss
        for process in self.processes():
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        return peak

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- Data ----------------------------------------------------------------------------------------


def prepare(audiences: list[int]) -> tuple[Any, Any]:
    """The bench tenant (email on the sink adapter), its template, recipients and one topic per audience size."""
    from django.db import connection

    from apps.notifications.models import Recipient, Template, Topic, TopicMembership
    from apps.notifications.services.recipients import recipients_upsert
    from apps.notifications.services.templates import template_create
    from apps.tenancy.models import Tenant
    from apps.tenancy.services import api_key_create

    tenant = Tenant.objects.filter(slug="bench").first() or Tenant.objects.create(slug="bench", name="Bench")
    tenant.settings = {"channel_providers": {"email": ["sink"]}}
    tenant.save(update_fields=["settings"])
    if not Template.objects.filter(tenant=tenant, key=TEMPLATE_KEY).exists():
        template_create(
            tenant=tenant,
            key=TEMPLATE_KEY,
            definition={
                "name": "Monthly statement",
                "category": "statements",
                "variables": [{"name": "period", "example": "2030-01"}],
                "default_channels": ["in_app", "email"],
                "content": {
                    "default": {
                        "email": {
                            "subject": "Your {{ period }} statement is ready",
                            "text": "Hi {{ recipient.name }},\n\nyour statement for {{ period }} is ready.",
                            "html": "<p>Hi {{ recipient.name }},</p>"
                            "<p>your statement for <b>{{ period }}</b> is ready.</p>",
                        },
                        "in_app": {
                            "title": "Statement {{ period }} is ready",
                            "body": "Open it to see the details.",
                            "action_url": "/statements/{{ period }}",
                        },
                    },
                    "fr": {
                        "email": {
                            "subject": "Votre relevé {{ period }} est prêt",
                            "text": "Bonjour {{ recipient.name }}.",
                        },
                        "in_app": {"title": "Relevé {{ period }} disponible", "body": "Ouvrez-le pour le détail."},
                    },
                },
            },
        )
    wanted = max(audiences)
    have = Recipient.objects.filter(tenant=tenant).count()
    if have < wanted:
        log(f"creating {wanted - have} recipients")
        for start in range(have, wanted, 10000):
            recipients_upsert(
                tenant=tenant,
                items=[
                    {
                        "external_id": f"r{i:07d}",
                        "email": f"r{i:07d}@example.com",
                        "name": f"Recipient {i}",
                        "locale": "fr-CA" if i % 10 == 0 else "en",
                        "timezone": "Europe/Paris" if i % 3 == 0 else "America/New_York",
                    }
                    for i in range(start, min(start + 10000, wanted))
                ],
            )
    ids = list(Recipient.objects.filter(tenant=tenant).order_by("pk").values_list("pk", flat=True)[:wanted])
    for size in audiences:
        topic, _ = Topic.objects.get_or_create(tenant=tenant, key=f"first-{size}")
        if TopicMembership.objects.filter(topic=topic).count() != size:
            TopicMembership.objects.filter(topic=topic).delete()
            TopicMembership.objects.bulk_create(
                [TopicMembership(topic=topic, recipient_id=pk) for pk in ids[:size]], batch_size=10000
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    _, key = api_key_create(tenant=tenant, name=f"bench {datetime.now(UTC).isoformat()}")
    return tenant, key


def reset_pipeline_tables() -> None:
    from django.db import connection

    from apps.notifications.models import Delivery, DeliveryAttempt, DigestItem, FanoutChunk, Notification, SinkRecord

    tables = [m._meta.db_table for m in (DeliveryAttempt, DigestItem, SinkRecord, Delivery, FanoutChunk, Notification)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        cursor.execute("CHECKPOINT")


def reset_counter() -> None:
    import redis

    from bench.fanout.worker_app import COUNTER_KEY

    redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).set(COUNTER_KEY, 0)


def worker_queries() -> int:
    import redis

    from bench.fanout.worker_app import COUNTER_KEY

    return int(redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).get(COUNTER_KEY) or 0)


# --- Phases --------------------------------------------------------------------------------------


def run_pipeline(
    size: int, api_key: str, args: argparse.Namespace, log_dir: Path, channels: tuple[str, ...] = ("in_app", "email")
) -> Result:
    from django.db import connection
    from django.db.models import Count
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from apps.notifications.models import Delivery, Notification

    reset_pipeline_tables()
    load_before = round(os.getloadavg()[0], 2)  # the machine may be shared: say how busy it was
    worker = Worker(args.concurrency, log_dir / f"worker-pipeline-{size}.log")
    worker.start()
    reset_counter()
    meter = CpuMeter(connection.cursor(), lambda: [p.pid for p in worker.processes()])
    meter.start()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    body = {
        "template": TEMPLATE_KEY,
        "payload": {"period": "2030-01"},
        "topic": f"first-{size}",
        "priority": "bulk",
        "channels": list(channels),
    }
    try:
        started, started_wall = time.perf_counter(), time.time()
        with CaptureQueriesContext(connection) as post_queries:
            response = client.post("/api/v1/notifications/", body, format="json")
        if response.status_code != 202:
            raise SystemExit(f"POST answered {response.status_code}: {response.content[:500]!r}")
        notification_id = response.json()["id"]
        dispatched_at = completed_at = None
        deadline = time.monotonic() + args.timeout
        last_sample = 0.0
        while completed_at is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"no completion after {args.timeout} s; see {worker.log_path}")
            status = Notification.objects.filter(pk=notification_id).values_list("status", flat=True).first()
            now = time.perf_counter()
            if dispatched_at is None and status in ("dispatched", "completed"):
                dispatched_at = now
            if status == "completed":
                completed_at = now
            if now - last_sample > 0.25:
                worker.sample()
                last_sample = now
            time.sleep(0.02)
        cpu = meter.read()
        peak = worker.high_water_mark()
        time.sleep(0.5)  # the last task's counter flush follows its postrun
        queries = worker_queries() + len(post_queries.captured_queries)
    finally:
        worker.stop()
    timeline = _timeline(notification_id, started_wall)
    by_channel = list(
        Delivery.objects.filter(notification_id=notification_id)
        .values("channel", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    deliveries = sum(row["n"] for row in by_channel)
    expected = {key: size for key in (("in_app", "delivered"), ("email", "sent")) if key[0] in channels}
    got = {(row["channel"], row["status"]): row["n"] for row in by_channel}
    if got != expected:
        raise SystemExit(f"unexpected delivery states {got}, wanted {expected}")
    assert dispatched_at is not None
    total, fanout = completed_at - started, dispatched_at - started
    return Result(
        name=f"pipeline {size:,}" if len(channels) == 2 else f"pipeline {'+'.join(channels)} {size:,}",
        recipients=size,
        deliveries=deliveries,
        seconds=round(total, 3),
        rate=round(deliveries / total),
        fanout_seconds=round(fanout, 3),
        fanout_rate=round(deliveries / fanout),
        queries=queries,
        queries_per_delivery=round(queries / deliveries, 4),
        peak_worker_rss_mb=round(peak / 2**20, 1),
        details={
            "post_queries": len(post_queries.captured_queries),
            "states": {f"{c}:{s}": n for (c, s), n in got.items()},
            "load_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
            "timeline_s": timeline,
            # CPU seconds of the worker processes and their PostgreSQL backends, POST to completion
            "cpu_s": cpu,
        },
    )


def _timeline(notification_id: Any, started_wall: float) -> dict[str, float | None]:
    """Seconds after the POST at which the fan-out was planned and its first and last chunks started
    (a chunk's `done_at` is the time its run began): where the time before the last row goes."""
    from django.db.models import Max, Min

    from apps.notifications.models import FanoutChunk, Notification

    planned = Notification.objects.filter(pk=notification_id).values_list("fanout_started_at", flat=True).get()
    chunks = FanoutChunk.objects.filter(notification_id=notification_id).aggregate(
        first=Min("done_at"), last=Max("done_at")
    )

    def after(moment: Any) -> float | None:
        return None if moment is None else round(moment.timestamp() - started_wall, 3)

    return {
        "planned": after(planned),
        "first_chunk_start": after(chunks["first"]),
        "last_chunk_start": after(chunks["last"]),
    }


def run_naive(size: int, args: argparse.Namespace, log_dir: Path) -> Result:
    from datetime import timedelta

    from django.utils import timezone

    from apps.notifications.models import Delivery, Notification, Recipient
    from apps.notifications.services.notifications import notification_create
    from apps.tenancy.models import Tenant
    from bench.fanout.naive import naive_deliver

    reset_pipeline_tables()
    tenant = Tenant.objects.get(slug="bench")
    ids = list(Recipient.objects.filter(tenant=tenant).order_by("pk").values_list("pk", flat=True)[:size])
    # The intent row the naive deliveries belong to (scheduled far away, so the real pipeline ignores it).
    notification = notification_create(
        tenant=tenant,
        template=TEMPLATE_KEY,
        payload={"period": "2030-01"},
        recipients=[Recipient.objects.get(pk=ids[0]).external_id],
        scheduled_at=timezone.now() + timedelta(days=365),
    )
    Notification.objects.filter(pk=notification.pk).update(status="dispatched")
    worker = Worker(args.concurrency, log_dir / "worker-naive.log")
    worker.start()
    reset_counter()
    try:
        started = time.perf_counter()
        # The baseline is slow by design: it runs to completion or for --naive-seconds, whichever
        # comes first, and reports the rate it reached. The cap covers its publishing too (one
        # message per delivery is part of its cost): a loaded machine once spent 230-260 s in all.
        deadline = time.monotonic() + args.naive_seconds
        published = 0
        for pk in ids:
            if time.monotonic() >= deadline:
                break
            for channel in ("in_app", "email"):
                naive_deliver.apply_async((str(notification.pk), pk, channel), queue="notifications.default")
                published += 1
        target = published
        done = 0
        while done < target and time.monotonic() < deadline:
            worker.sample()
            time.sleep(0.5)
            done = Delivery.objects.filter(notification=notification, status__in=["sent", "delivered"]).count()
        elapsed = time.perf_counter() - started
        peak = worker.high_water_mark()
        time.sleep(0.5)
        queries = worker_queries()
    finally:
        worker.stop()
        from workers.celery import app

        app.control.purge()  # what the baseline did not get to (this run's own broker prefix)
    return Result(
        name=f"naive {size:,}",
        recipients=size,
        deliveries=done,
        seconds=round(elapsed, 3),
        rate=round(done / elapsed),
        queries=queries,
        queries_per_delivery=round(queries / done, 2) if done and queries else None,
        details={"published": target, "completed": done, "of": 2 * size},
        peak_worker_rss_mb=round(peak / 2**20, 1),
    )


def run_copy(rows: int, channels: tuple[str, ...] = ("in_app", "email"), streams: int = 1) -> Result:
    """COPY `rows` delivery rows (one per recipient and channel, with realistic rendered content)
    into the deliveries table with all its indexes, in `streams` connections at once (each its own
    share of the recipients, one transaction each). The text is built before the clock starts."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg
    from django.db import connection
    from django.utils import timezone

    from apps.notifications.models import Delivery, Notification, Recipient, uuid7
    from apps.notifications.services.notifications import notification_create
    from apps.tenancy.models import Tenant

    reset_pipeline_tables()
    tenant = Tenant.objects.get(slug="bench")
    recipients = list(
        Recipient.objects.filter(tenant=tenant)
        .order_by("pk")
        .values_list("pk", "email", "name")[: rows // len(channels)]
    )
    notification = notification_create(
        tenant=tenant, template=TEMPLATE_KEY, payload={"period": "2030-01"}, recipients=["r0000000"],
        scheduled_at=timezone.now().replace(year=timezone.now().year + 1),
    )  # fmt: skip
    Notification.objects.filter(pk=notification.pk).update(status="dispatched")
    version_id = notification.template_version_id
    now = timezone.now().isoformat()
    in_app = {
        "title": "Statement 2030-01 is ready",
        "body": "Open it to see the details.",
        "action_url": "/statements/2030-01",
    }

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    lines = []
    for pk, email, name in recipients:
        email_rendered = {
            "to": email,
            "locale": "default",
            "content": {
                "subject": "Your 2030-01 statement is ready",
                "text": f"Hi {name},\n\nyour statement for 2030-01 is ready.",
                "html": f"<p>Hi {name},</p><p>your statement for <b>2030-01</b> is ready.</p>",
            },
        }
        for channel, status, rendered in (
            ("in_app", "delivered", {"to": "x", "locale": "default", "content": in_app}),
            ("email", "sent", email_rendered),
        ):
            if channel not in channels:
                continue
            lines.append(
                "\t".join(
                    [
                        str(uuid7()),
                        str(tenant.pk),
                        str(notification.pk),
                        str(pk),
                        channel,
                        status,
                        "",
                        str(version_id),
                        "1",
                        "sink",
                        "",
                        escape(json.dumps(rendered)),
                        "",
                        "",
                        now,
                        now,
                    ]
                )
            )
    share = -(-len(lines) // streams)
    parts = [("\n".join(lines[i : i + share]) + "\n").encode() for i in range(0, len(lines), share)]
    columns = (
        "id, tenant_id, notification_id, recipient_id, channel, status, suppression_reason, template_version_id, "
        "attempts, provider, provider_message_id, rendered, error_code, last_error, created_at, sent_at"
    )
    sql = f"COPY {Delivery._meta.db_table} ({columns}) FROM STDIN"
    settings = connection.settings_dict
    conninfo = {
        "host": settings["HOST"],
        "port": settings["PORT"],
        "user": settings["USER"],
        "dbname": settings["NAME"],
    }
    connections = [psycopg.connect(**conninfo) for _ in parts]

    def write(conn: Any, data: bytes) -> None:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(sql) as copy:
            copy.write(data)

    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            started = time.perf_counter()
            list(pool.map(write, connections, parts))
            elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            conn.close()
    written = Delivery.objects.filter(notification=notification).count()
    label = "" if channels == ("in_app", "email") else f" {'+'.join(channels)}"
    label += f" in {len(parts)} streams" if len(parts) > 1 else ""
    return Result(
        name=f"COPY{label} {written:,} rows",
        recipients=len(recipients),
        deliveries=written,
        seconds=round(elapsed, 3),
        rate=round(written / elapsed),
    )


def run_peer(size: int, args: argparse.Namespace) -> Result:
    """django-notifications-community's in-app rows (bench/fanout/peer.py, a process of its own:
    its Django settings are not ours)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    command = [
        sys.executable, "-m", "bench.fanout.peer", "--recipients", str(size), "--concurrency", str(args.concurrency),
        "--chunk-size", str(args.chunk_size), "--pg-host", args.pg_host, "--pg-port", str(args.pg_port),
        "--pg-user", args.pg_user, "--redis", args.redis, "--timeout", str(args.timeout),
    ]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    peer = json.loads(out.strip().splitlines()[-1])
    return Result(
        name=peer["name"],
        recipients=peer["recipients"],
        deliveries=peer["rows"],
        seconds=peer["seconds"],
        rate=peer["rate"],
        fanout_seconds=peer["seconds"],
        fanout_rate=peer["rate"],
        peak_worker_rss_mb=peer["peak_worker_rss_mb"],
        details={"load_1m_before_after": peer["load_1m_before_after"], "cpu_s": peer["cpu_s"]},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100000)
    parser.add_argument("--small", type=int, default=10000, help="The smaller audience, to compare memory.")
    parser.add_argument(
        "--naive", type=int, default=2500, help="Recipients for the naive baseline (x2 channels: 5,000 deliveries)."
    )
    parser.add_argument(
        "--naive-seconds", type=float, default=150, help="Stop the baseline after this long and report its rate."
    )
    parser.add_argument("--concurrency", type=int, default=2, help="Worker processes.")
    parser.add_argument("--chunk-size", type=int, default=5000)  # FANOUT_CHUNK_SIZE's default
    parser.add_argument("--send-batch", type=int, default=500)
    parser.add_argument("--database", default="signalbox_bench")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    # A database number of its own: a FLUSHDB of database 0 by anything else sharing this Redis
    # would otherwise drop the run's queued tasks (a key prefix does not protect against that).
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-peer", action="store_true", help="Leave out the django-notifications-community run.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    configure(args)
    ensure_database(args)
    import django

    django.setup()
    from django.core.management import call_command

    log(f"migrating {args.database}")
    call_command("migrate", verbosity=0)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"signalbox-bench-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    audiences = sorted({args.small, args.recipients}) if args.small else [args.recipients]
    _, api_key = prepare(audiences)

    results: list[Result] = []
    for size in audiences:
        log(f"pipeline: {size:,} recipients x 2 channels")
        results.append(run_pipeline(size, api_key, args, log_dir))
        log(f"  {results[-1]}")
    if not args.skip_peer:
        log(f"peer: {args.recipients:,} in-app rows, by the pipeline and by django-notifications-community")
        results.append(run_pipeline(args.recipients, api_key, args, log_dir, channels=("in_app",)))
        log(f"  {results[-1]}")
        results.append(run_peer(args.recipients, args))
        log(f"  {results[-1]}")
    if not args.skip_naive:
        log(f"naive baseline: {args.naive:,} recipients x 2 channels")
        results.append(run_naive(args.naive, args, log_dir))
        log(f"  {results[-1]}")
    big = next(r for r in results if r.name == f"pipeline {args.recipients:,}")
    log(f"ceiling: COPY {big.deliveries:,} delivery rows")
    copies = [run_copy(big.deliveries) for _ in range(2)]
    results.append(min(copies, key=lambda r: r.seconds))
    log(f"  {results[-1]} (runs: {[c.seconds for c in copies]} s)")
    if not args.skip_peer:  # what the database alone can take of the peer comparison's rows
        for streams in (1, args.concurrency):
            log(f"ceiling: COPY {args.recipients:,} in-app rows in {streams} stream(s)")
            copies = [run_copy(args.recipients, ("in_app",), streams) for _ in range(2)]
            results.append(min(copies, key=lambda r: r.seconds))
            log(f"  {results[-1]} (runs: {[c.seconds for c in copies]} s)")
    report(results, args, big)


def report(results: list[Result], args: argparse.Namespace, big: Result) -> None:
    naive = next((r for r in results if r.name.startswith("naive")), None)
    copy = next(r for r in results if r.name.startswith("COPY") and r.deliveries == big.deliveries)
    copy_in_app = [r for r in results if r.name.startswith("COPY in_app")]
    small = next((r for r in results if r.name.startswith("pipeline") and r.recipients != args.recipients), None)
    in_app = next((r for r in results if r.name.startswith("pipeline in_app")), None)
    peer = next((r for r in results if r.name.startswith("peer")), None)
    summary = {
        "in_app_vs_peer": round((in_app.fanout_rate or 0) / peer.rate, 2) if in_app and peer else None,
        # The most the database takes of those rows (COPY, best of 1 and N streams) over the peer's rate:
        # below 3, a pipeline 3x the peer is out of reach on this machine.
        # CPU seconds (workers + their PostgreSQL backends) the peer spends per in-app row over the
        # pipeline's: the same comparison as a rate, barely moved by what else the machine runs.
        "in_app_vs_peer_cpu": round(peer.details["cpu_s"] / in_app.details["cpu_s"], 2) if in_app and peer else None,
        "copy_in_app_vs_peer": round(max(r.rate for r in copy_in_app) / peer.rate, 2) if copy_in_app and peer else None,
        "e2e_vs_naive": round(big.rate / naive.rate, 1) if naive else None,
        "fanout_vs_copy": round((big.fanout_rate or 0) / copy.rate, 3),
        "e2e_vs_copy": round(big.rate / copy.rate, 3),
        "memory_small_vs_big_mb": [small.peak_worker_rss_mb, big.peak_worker_rss_mb] if small else None,
    }
    env = {
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "worker_processes": args.concurrency,
        "chunk_size": args.chunk_size,
        "send_batch": args.send_batch,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(
        "\n| run | deliveries | seconds | deliveries/s (end to end) | deliveries/s (fan-out) "
        "| SQL statements / delivery | peak worker RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        fanout = f"{r.fanout_rate:,}" if r.fanout_rate else "—"
        qpd = f"{r.queries_per_delivery}" if r.queries_per_delivery is not None else "—"
        rss = f"{r.peak_worker_rss_mb} MB" if r.peak_worker_rss_mb else "—"
        print(f"| {r.name} | {r.deliveries:,} | {r.seconds} | {r.rate:,} | {fanout} | {qpd} | {rss} |")
    print(f"\nsummary: {json.dumps(summary)}\nenvironment: {json.dumps(env)}")
    document = {"results": {r.name: asdict(r) for r in results}, "summary": summary, "environment": env}
    if args.json:
        args.json.write_text(json.dumps(document, indent=2))
    results_compare("fanout", document, results_write("fanout", document))


if __name__ == "__main__":
    main()
