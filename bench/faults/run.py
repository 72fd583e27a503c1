"""The fault matrix: one notification (email through SendGrid into the provider sandbox, plus
in-app) to N recipients, per fault, through real workers, a real beat and a real broker; then
what was lost and what was sent twice, counted at the sandbox by delivery id.

    .venv/bin/python -m bench.faults.run                      # every fault, 2,000 recipients (~20 min, 2 cores)
    .venv/bin/python -m bench.faults.run --recipients 200 --fault sigkill-child
    .venv/bin/python -m bench.faults.run --list
    make faults ARGS="--recipients 500"

It owns everything it breaks: a PostgreSQL database `signalbox_faults_<pid>` (created, migrated,
dropped at the end), a redis-server on a free port (broker, breakers, limits; killed and restarted
by the Redis faults), the provider sandbox, and a gunicorn on a free port receiving the sandbox's
SendGrid Event Webhook (so an answer lost to a crash or a timeout is reconciled by callback, as in
production). Emails carry per-recipient content, so each is one SendGrid request: every request
of a batch may be the one in flight when the fault strikes.

A delivery is **lost** if it is missing, still in flight when the fault's deadline passes, final
without having reached the provider (`sent`/`delivered` with no sandbox message), or given up on
(`dead`/`failed`/`bounced`: every fault here is transient, so each email should get through). It
is **sent twice** if the sandbox recorded more than one message under its id (all providers
together). The run exits 1 if any fault loses anything or sends twice beyond the guarantee
(docs/reliability.md, "The send window"): 0 copies through SendGrid, which reconciles by callback;
at most one request (one message here) per hard-killed process through a provider that cannot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import database_create, database_drop, free_port, log
from bench.faults.harness import ROOT, CeleryProcess, RedisServer, Web, backends_of, stop_all

HANG_SECONDS = 8  # a sandbox `timeout` fault hangs this long: past the adapters' 5 s client timeout
CLIENT_TIMEOUT = 5
CALLBACK_DELAY_MS = 1000
CONTENT = {
    "email": {"subject": "Order {{ order }} shipped", "text": "Hello {{ recipient.name }}, it is on its way."},
    "in_app": {"title": "Order {{ order }} shipped", "body": "Track it."},
}
RETRY_POLICY = {"max_attempts": 8, "base_seconds": 0.5, "cap_seconds": 4}
# The platform's patience, shortened so a recovery takes seconds, not the production minutes
# (docs/reliability.md, "Knobs"): a live sender renews its lease every 10 s.
PLATFORM_ENV = {
    "NOTIFICATIONS_SEND_LEASE_SECONDS": "30",
    "NOTIFICATIONS_SWEEP_INTENT_AFTER_SECONDS": "10",
    "NOTIFICATIONS_SWEEP_CHUNK_AFTER_SECONDS": "30",
    "NOTIFICATIONS_SWEEP_QUEUED_AFTER_SECONDS": "60",
    "SIGNALBOX_RECONCILE_WINDOW_SECONDS": "15",
    "NOTIFICATIONS_RETRY_BASE_SECONDS": "0.5",
    "NOTIFICATIONS_RETRY_CAP_SECONDS": "4",
    "NOTIFICATIONS_FANOUT_CHUNK_SIZE": "500",
    "NOTIFICATIONS_SEND_BATCH_SIZE": "100",
    "SIGNALBOX_MIN_SCHEDULE_INTERVAL_SECONDS": "10",  # two-beats' recurring send ticks every 20 s
}
BEAT_EVERY_SECONDS = 5  # the dispatcher already runs every 5 s; the sweeper too, here (30 s by default)


@dataclass
class Row:
    fault: str
    deliveries: int = 0
    lost: int = 0
    sent_twice: int = 0
    allowed_twice: int = 0
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class Bench:
    """What every fault shares: the database, the sandbox, the callback server and the Redis port."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.redis = RedisServer(work / "redis", free_port())
        self.web = Web(work / "web.log", free_port())
        self.sandbox: Any = None
        self.tenant: Any = None
        self.workers: list[CeleryProcess] = []
        self.beats: list[CeleryProcess] = []

    # --- set-up ------------------------------------------------------------------------------

    def configure(self) -> None:
        from sandbox.config import DEFAULT_EVENT_KEY_SEED
        from sandbox.keys import event_webhook_public_key

        a = self.args
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "project.settings",
                "DEBUG": "0",
                "SIGNALBOX_ALLOW_INSECURE_SETTINGS": "1",  # a measurement, not a deployment
                "SECRET_KEY": "faults-bench-only-secret-key-do-not-deploy-7c2e9a",
                "SECURE_SSL_REDIRECT": "0",
                "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
                "DATABASE_URL": f"postgres://{a.pg_user}@{a.pg_host}:{a.pg_port}/{a.database}",
                "CONN_MAX_AGE": "600",
                "CELERY_BROKER_URL": self.redis.url,
                "SIGNALBOX_REDIS_URL": self.redis.url,
                "SIGNALBOX_PUBLIC_URL": self.web.url,
                "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY": event_webhook_public_key(DEFAULT_EVENT_KEY_SEED),
                "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE": "1",
                "LOG_LEVEL": "INFO",
                "LOG_FORMAT": "console",
                "PYTHONUNBUFFERED": "1",
                **PLATFORM_ENV,
            }
        )

    def create_database(self) -> None:
        a = self.args
        database_create(a.database, host=a.pg_host, port=a.pg_port, user=a.pg_user)

    def drop_database(self) -> None:
        a = self.args
        database_drop(a.database, host=a.pg_host, port=a.pg_port, user=a.pg_user)

    def start(self) -> None:
        import django
        from django.core.management import call_command

        from sandbox.testing import SandboxProcess

        self.create_database()
        django.setup()
        log(f"migrating {self.args.database}")
        call_command("migrate", verbosity=0)
        self.sandbox = SandboxProcess(extra_args=("--hang-seconds", str(HANG_SECONDS), "--log-level", "WARNING"))
        self.sandbox.start()
        self.redis.start(fresh=True)
        self.web.start()
        self.prepare_data()
        self.tune_beat()

    def prepare_data(self) -> None:
        from django.db import connection

        from apps.notifications.models import Recipient, Topic, TopicMembership
        from apps.notifications.services.recipients import recipients_upsert
        from apps.providers.services import provider_config_create
        from apps.tenancy.models import Tenant
        from sandbox.config import DEFAULT_SENDGRID_API_KEY

        tenant = Tenant.objects.create(slug="faults", name="Fault matrix")
        common = {"from_email": "bench@example.com", "timeout": CLIENT_TIMEOUT}
        provider_config_create(
            tenant=tenant, name="sendgrid", provider="sendgrid", priority=1,
            options={"host": self.sandbox.http_url, **common}, secrets={"api_key": DEFAULT_SENDGRID_API_KEY},
        )  # fmt: skip
        provider_config_create(
            tenant=tenant, name="relay", provider="smtp", priority=2,
            options={"host": self.sandbox.smtp_host, "port": self.sandbox.smtp_port, **common},
        )  # fmt: skip
        tenant.settings = {**tenant.settings, "retry_policy": RETRY_POLICY}
        tenant.save(update_fields=["settings"])
        n = max(self.args.recipients, 1)
        log(f"creating {n} recipients")
        for start in range(0, n, 5000):
            recipients_upsert(
                tenant=tenant,
                items=[
                    {"external_id": f"r{i:06d}", "email": f"r{i:06d}@example.com", "name": f"Recipient {i}"}
                    for i in range(start, min(start + 5000, n))
                ],
            )
        ids = list(Recipient.objects.filter(tenant=tenant).order_by("external_id").values_list("pk", flat=True))
        for key, members in (("all", ids), ("half", ids[: max(len(ids) // 2, 1)])):
            topic = Topic.objects.create(tenant=tenant, key=key)
            TopicMembership.objects.bulk_create([TopicMembership(topic=topic, recipient_id=pk) for pk in members])
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        self.tenant = tenant

    def tune_beat(self) -> None:
        """The sweeper every 5 s instead of 30 (an operator's interval, kept in PeriodicTask)."""
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        every, _ = IntervalSchedule.objects.get_or_create(every=BEAT_EVERY_SECONDS, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.filter(task__in=["signalbox.notifications.sweep"]).update(interval=every)

    def stop(self) -> None:
        stop_all(*self.beats, *self.workers, self.web)
        self.redis.kill()
        if self.sandbox is not None:
            self.sandbox.stop()
        if not self.args.keep_database:
            self.drop_database()

    # --- one fault -----------------------------------------------------------------------------

    def reset(self, *, persistent: bool = False) -> None:
        from django.db import connection

        from apps.notifications.models import Delivery, DeliveryAttempt, FanoutChunk, Notification
        from apps.tasks.models import Schedule, TaskExecution

        with connection.cursor() as cursor:
            tables = [m._meta.db_table for m in (DeliveryAttempt, Delivery, FanoutChunk, Notification)]
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        TaskExecution.objects.all().delete()
        for schedule in Schedule.objects.all():
            from apps.tasks.services.schedules import schedule_delete

            schedule_delete(schedule=schedule)
        self.sandbox.client.reset()
        self.sandbox.client.clear_faults()
        self.sandbox.client.auto_callbacks(
            "sendgrid", f"{self.web.url}/callbacks/sendgrid/events", delay_ms=self.args.callback_delay_ms
        )
        self.redis.kill()
        self.redis.start(persistent=persistent, fresh=True)
        self.reset_pools()

    @staticmethod
    def reset_pools() -> None:
        from kombu import pools

        from workers.celery import app

        pools.reset()
        app._pool = None  # type: ignore[attr-defined]
        with contextlib.suppress(AttributeError, KeyError):
            app.__dict__["amqp"]._producer_pool = None

    def worker(self, fault: str, *, concurrency: int | None = None, **env: str) -> CeleryProcess:
        n = len(self.workers)
        proc = CeleryProcess(
            "worker", self.work / f"{fault}-worker{n}.log", concurrency=concurrency or self.args.concurrency, env=env
        ).start()
        self.workers.append(proc)
        return proc

    def beat(self, fault: str) -> CeleryProcess:
        proc = CeleryProcess("beat", self.work / f"{fault}-beat{len(self.beats)}.log").start()
        self.beats.append(proc)
        return proc

    def finish(self) -> None:
        stop_all(*self.beats, *self.workers)
        self.beats, self.workers = [], []

    def send(self, topic: str = "all") -> Any:
        from apps.notifications.services.notifications import notification_create

        return notification_create(
            tenant=self.tenant, content=CONTENT, category="orders", payload={"order": "A-7"},
            topic=topic, channels=["email", "in_app"], priority="bulk",
        )  # fmt: skip

    def emails_at_sandbox(self) -> int:
        counts = self.sandbox.client.counts()["providers"]
        return sum(sum((counts.get(p) or {}).get("idempotency_keys", {}).values()) for p in ("sendgrid", "smtp"))

    def wait_for_emails(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.emails_at_sandbox() < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"fewer than {n} emails reached the sandbox within {timeout} s")
            time.sleep(0.1)

    def wait_final(self, notification_ids: list[Any], expected: int, timeout: float) -> float | None:
        """Seconds (from now) until every expected delivery exists and none is in flight; None if never."""
        from django.db import close_old_connections

        from apps.notifications.models import Delivery

        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                rows = Delivery.objects.filter(notification_id__in=notification_ids)
                if rows.count() >= expected and not rows.filter(status__in=Delivery.IN_FLIGHT).exists():
                    return time.monotonic() - started
            except Exception:  # the bench's own connection may be one a fault terminated
                close_old_connections()
                from django.db import connection

                connection.close()
            time.sleep(0.5)
        return None

    # --- the verdict -------------------------------------------------------------------------------

    def judge(self, row: Row, notification_ids: list[Any], expected: int, *, hard_kills: int = 0) -> None:
        from apps.notifications.models import Delivery, DeliveryAttempt

        by_provider = self.sandbox.client.counts()["providers"]
        copies: dict[str, Counter[str]] = {}
        for provider in ("sendgrid", "smtp"):
            copies[provider] = Counter((by_provider.get(provider) or {}).get("idempotency_keys") or {})
        total = copies["sendgrid"] + copies["smtp"]
        rows = list(
            Delivery.objects.filter(notification_id__in=notification_ids).values_list("id", "channel", "status")
        )
        ids = {str(pk) for pk, _, _ in rows}
        attempts = list(
            DeliveryAttempt.objects.filter(delivery__notification_id__in=notification_ids).values_list(
                "delivery_id", "outcome", "error_code", "provider"
            )
        )
        accepted = Counter(str(d) for d, outcome, _, _ in attempts if outcome == "accepted")
        interrupted = {str(d) for d, outcome, code, _ in attempts if outcome == "lost" or code == "timeout"}
        statuses = Counter(f"{channel}:{status}" for _, channel, status in rows)
        lost: list[str] = []
        twice: list[str] = []
        missing = max(expected - len(rows), 0)
        for pk, channel, status in rows:
            key = str(pk)
            if channel == "in_app":
                if status != "delivered":
                    lost.append(f"{key} in_app {status}")
                continue
            if status in Delivery.IN_FLIGHT:
                lost.append(f"{key} still {status}")
            elif status not in ("sent", "delivered"):
                lost.append(f"{key} ended {status}")
            elif total[key] == 0:
                lost.append(f"{key} {status} but never at the provider")
            if total[key] > 1:
                twice.append(
                    f"{key} {status}: sendgrid x{copies['sendgrid'][key]}, smtp x{copies['smtp'][key]}, "
                    f"attempts {[(o, c, p) for d, o, c, p in attempts if str(d) == key]}"
                )
        strays = set(total) - ids
        # SendGrid reconciles by callback: no copy is allowed there; an SMTP copy only for a
        # request in flight in a hard-killed process (one message per request here).
        over_sendgrid = [k for k in twice if copies["sendgrid"][k.split()[0]] > 1]
        row.deliveries = len(rows)
        row.lost = missing + len(lost)
        row.sent_twice = len(twice)
        row.allowed_twice = hard_kills
        by_callback = sum(
            1
            for pk, channel, status in rows
            if channel == "email" and status in ("sent", "delivered") and not accepted[str(pk)]
        )
        retried = sum(1 for pk in interrupted if accepted[pk] >= 1)
        timeouts = sum(1 for _, outcome, code, _ in attempts if code == "timeout")
        lost_attempts = [provider for _, outcome, _, provider in attempts if outcome == "lost"]
        transient = Counter(code for _, outcome, code, _ in attempts if outcome == "transient" and code != "timeout")
        via_smtp = sum(1 for pk in ids if copies["smtp"][pk])
        marked = sum(1 for p in lost_attempts if p)
        row.notes.append(f"{len(lost_attempts)} claims taken back from a dead worker ({marked} marked in flight)")
        if timeouts:
            row.notes.append(f"{timeouts} answers lost to a timeout (`unknown`)")
        row.notes.append(f"{by_callback} settled by callback alone, {retried} interrupted then retried")
        if transient:
            row.notes.append("transient " + ", ".join(f"{c} x{n}" for c, n in transient.most_common(3)))
        if via_smtp:
            row.notes.append(f"{via_smtp} via SMTP failover")
        row.notes.append("statuses " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
        if missing:
            row.violations.append(f"{missing} deliveries never created")
        if lost:
            row.violations.append(f"lost: {lost[:10]}")
        if over_sendgrid:
            row.violations.append(f"sent twice through SendGrid: {over_sendgrid[:10]}")
        if len(twice) > hard_kills:
            row.violations.append(f"sent twice beyond {hard_kills} allowed: {twice[:10]}")
        if strays:
            row.violations.append(f"sandbox messages with no delivery of ours: {sorted(strays)[:5]}")


# --- The faults ------------------------------------------------------------------------------------


def standard(
    bench: Bench,
    row: Row,
    inject: Callable[[Bench, CeleryProcess], int],
    *,
    delay_ms: int = 20,
    persistent: bool = False,
    check_worker: bool = False,
) -> None:
    """One notification to every recipient; `inject` strikes once a quarter of the emails reached
    the sandbox, and returns how many processes it hard-killed."""
    bench.reset(persistent=persistent)
    worker = bench.worker(row.fault)
    bench.beat(row.fault)
    delay_ms = bench.args.send_delay_ms if bench.args.send_delay_ms is not None else delay_ms
    if delay_ms:
        bench.sandbox.client.add_fault("sendgrid", delay_ms=delay_ms)
    started = time.monotonic()
    notification = bench.send()
    n = bench.args.recipients
    bench.wait_for_emails(max(n // 4, 1))
    hard_kills = inject(bench, worker)
    waited = bench.wait_final([notification.pk], 2 * n, bench.args.timeout - (time.monotonic() - started))
    row.seconds = None if waited is None else round(time.monotonic() - started, 1)
    time.sleep(3)  # a late copy (an orphaned process, a late retry) still counts
    if check_worker and not worker.alive:
        row.violations.append(f"the worker's main process exited; see {worker.log_path}")
    elif check_worker:
        row.notes.append("the worker's main process lived through it")
    bench.judge(row, [notification.pk], 2 * n, hard_kills=hard_kills)


def none_slow_provider(bench: Bench, row: Row) -> None:
    """SendGrid answers each request in 2 s; 8 processes, batches of 25: each batch (50 s) outlasts
    the 30 s lease, which its sender must renew."""
    bench.reset()
    n = min(bench.args.recipients, bench.args.slow_recipients)
    bench.worker(row.fault, concurrency=8, NOTIFICATIONS_SEND_BATCH_SIZE="25")
    bench.beat(row.fault)
    bench.sandbox.client.add_fault("sendgrid", delay_ms=2000)
    started = time.monotonic()
    from apps.notifications.models import Recipient, Topic, TopicMembership

    topic = Topic.objects.create(tenant=bench.tenant, key=f"slow-{n}")
    members = Recipient.objects.filter(tenant=bench.tenant).order_by("external_id").values_list("pk", flat=True)[:n]
    TopicMembership.objects.bulk_create([TopicMembership(topic=topic, recipient_id=pk) for pk in members])
    notification = bench.send(topic.key)
    waited = bench.wait_final([notification.pk], 2 * n, bench.args.timeout)
    row.seconds = None if waited is None else round(time.monotonic() - started, 1)
    time.sleep(1)
    row.notes.append(f"{n} recipients (capped by --slow-recipients)")
    bench.judge(row, [notification.pk], 2 * n)


def sigkill_child(bench: Bench, row: Row) -> None:
    def inject(bench: Bench, worker: CeleryProcess) -> int:
        child = worker.children()[0]
        log(f"  SIGKILL prefork child {child.pid}")
        os.kill(child.pid, signal.SIGKILL)
        return 1

    standard(bench, row, inject)


def sigkill_main(bench: Bench, row: Row) -> None:
    def inject(bench: Bench, worker: CeleryProcess) -> int:
        killed = len(worker.pids())
        log(f"  SIGKILL worker main {worker.proc.pid if worker.proc else '?'} ({killed - 1} children orphaned)")
        worker.kill_main()
        time.sleep(2)
        bench.worker(row.fault)
        return killed

    standard(bench, row, inject)


def record_then_hang(bench: Bench, row: Row) -> None:
    hangs = max(bench.args.recipients // 200, 5)

    def inject(bench: Bench, worker: CeleryProcess) -> int:
        log(f"  SendGrid records the next {hangs} requests, then hangs {HANG_SECONDS} s (client timeout 5 s)")
        bench.sandbox.client.clear_faults()
        bench.sandbox.client.add_fault("sendgrid", timeout=True, times=hangs)
        return 0

    standard(bench, row, inject)


def redis_kill(persistent: bool) -> Callable[[Bench, Row], None]:
    def run(bench: Bench, row: Row) -> None:
        def inject(bench: Bench, worker: CeleryProcess) -> int:
            log(f"  kill -9 redis-server ({'AOF' if persistent else 'no persistence'}), start it again 4 s later")
            bench.redis.kill()
            time.sleep(4)
            bench.redis.start()
            bench.reset_pools()
            return 0

        standard(bench, row, inject, delay_ms=40, persistent=persistent, check_worker=True)

    return run


def pg_backend_kill(bench: Bench, row: Row) -> None:
    def inject(bench: Bench, worker: CeleryProcess) -> int:
        import psycopg

        a = bench.args
        terminated = 0
        for _ in range(3):
            ports = backends_of(worker.pids(), a.pg_port)
            with psycopg.connect(
                host=a.pg_host, port=a.pg_port, user=a.pg_user, dbname="postgres", autocommit=True
            ) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND client_port = ANY(%s)",
                    [a.database, list(ports)],
                ).fetchall()
            terminated += len(rows)
            time.sleep(2)
        log(f"  terminated {terminated} backends of the worker's processes (3 rounds, 2 s apart)")
        row.notes.append(f"{terminated} backends terminated")
        return 0

    standard(bench, row, inject)


def sigterm(bench: Bench, row: Row) -> None:
    def inject(bench: Bench, worker: CeleryProcess) -> int:
        assert worker.proc is not None
        log(f"  SIGTERM worker {worker.proc.pid} (warm shutdown), then a new worker")
        stopped = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(timeout=180)
        row.notes.append(f"warm shutdown took {time.monotonic() - stopped:.1f} s")
        bench.worker(row.fault)
        return 0

    standard(bench, row, inject)


def storm(status: int, **knobs: Any) -> Callable[[Bench, Row], None]:
    def run(bench: Bench, row: Row) -> None:
        times = knobs.pop("times", None) or max(bench.args.recipients // 4, 20)

        def inject(bench: Bench, worker: CeleryProcess) -> int:
            log(f"  SendGrid answers {status} to the next {times} requests {knobs or ''}")
            bench.sandbox.client.clear_faults()
            bench.sandbox.client.add_fault("sendgrid", status, times=times, **knobs)
            return 0

        standard(bench, row, inject)

    return run


def two_beats(bench: Bench, row: Row) -> None:
    """Two beat processes at once and a recurring send to half the recipients every 20 s: each tick
    must make exactly one notification, each sent once."""
    from apps.notifications.models import Notification
    from apps.tasks.models import TaskExecution
    from apps.tasks.services.schedules import schedule_create, schedule_pause

    bench.reset()
    interval = 20
    bench.worker(row.fault)
    started = time.monotonic()
    schedule = schedule_create(
        tenant=bench.tenant, name="faults-recurring", kind="notification", interval_seconds=interval,
        target={"content": CONTENT, "category": "orders", "payload": {"order": "A-7"}, "topic": "half",
                "channels": ["email", "in_app"], "priority": "bulk"},
    )  # fmt: skip
    bench.beat(row.fault)
    bench.beat(row.fault)
    ticks = 2
    deadline = time.monotonic() + interval * (ticks + 2)
    while time.monotonic() < deadline:
        fired = Notification.objects.filter(tenant=bench.tenant).count()
        if fired >= ticks:
            break
        time.sleep(0.5)
    schedule_pause(schedule=schedule)
    time.sleep(3)  # a tick both beats were publishing at the pause still lands
    notifications = list(Notification.objects.filter(tenant=bench.tenant).values_list("pk", "metadata"))
    per_tick = Counter(str((meta or {}).get("schedule", {}).get("tick")) for _, meta in notifications)
    executions = Counter(
        str(t) for t in TaskExecution.objects.filter(schedule=schedule).values_list("scheduled_for", flat=True)
    )
    half = max(bench.args.recipients // 2, 1)
    ids = [pk for pk, _ in notifications]
    waited = bench.wait_final(ids, 2 * half * len(ids), bench.args.timeout)
    row.seconds = None if waited is None else round(time.monotonic() - started, 1)
    time.sleep(1)
    logs = [path.read_text(errors="replace") for path in bench.work.glob(f"{row.fault}-worker*.log")]
    runs = sum(
        1
        for text in logs
        for line in text.splitlines()
        if "signalbox.tasks.run_schedule" in line and "received" in line.lower()
    )
    row.notes.append(
        f"{len(per_tick)} ticks of {half} recipients; {runs} schedule runs received from 2 beats; "
        f"notifications per tick {sorted(per_tick.values())}"
    )
    if len(per_tick) < ticks:
        row.violations.append(f"only {len(per_tick)} ticks fired in {interval * (ticks + 2)} s")
    if any(n != 1 for n in per_tick.values()) or any(n != 1 for n in executions.values()):
        row.violations.append(f"a tick fired twice: notifications {dict(per_tick)}, executions {dict(executions)}")
    bench.judge(row, ids, 2 * half * len(ids))


FAULTS: dict[str, tuple[str, Callable[[Bench, Row], None]]] = {
    "none-slow-provider": ("no fault; SendGrid answers every request in 2 s", none_slow_provider),
    "sigkill-child": ("SIGKILL one prefork child mid-send", sigkill_child),
    "sigkill-main": ("SIGKILL the worker's main process mid-send, then start a worker", sigkill_main),
    "record-then-hang": ("SendGrid records the message, then hangs past the client timeout", record_then_hang),
    "redis-kill-empty": ("kill -9 the broker mid-send, restart it empty", redis_kill(False)),
    "redis-kill-persistent": ("kill -9 the broker mid-send, restart it with its AOF", redis_kill(True)),
    "pg-backend-kill": ("pg_terminate_backend of the worker's connections mid-send, 3 times", pg_backend_kill),
    "sigterm": ("SIGTERM the worker mid-send (warm shutdown), then start a worker", sigterm),
    "provider-5xx-storm": ("SendGrid answers 500 to a quarter of the requests", storm(500)),
    "provider-429-storm": (
        "SendGrid answers 429 (reset in 1 s) to a quarter of the requests",
        storm(429, retry_after=1),
    ),
    "provider-timeout-storm": (
        "SendGrid hangs past the client timeout, then 503, nothing recorded",
        storm(503, timeout=True, times=10),
    ),
    "two-beats": ("two beat processes, a recurring send every 20 s", two_beats),
}


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"\nfault matrix: {args.recipients:,} recipients x (email via SendGrid + in-app), "
          f"{datetime.now(UTC).isoformat(timespec='seconds')}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("\n| fault | deliveries | lost | sent twice | time until all final | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        seconds = f"{r.seconds} s" if r.seconds is not None else "never"
        flag = "" if r.ok else " **FAIL**"
        print(
            f"| `{r.fault}`{flag} | {r.deliveries:,} | {r.lost} | {r.sent_twice} | {seconds} | {'; '.join(r.notes)} |"
        )
    for r in rows:
        for v in r.violations:
            print(f"\nFAIL {r.fault}: {v}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS), help="run only this fault (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--slow-recipients", type=int, default=200, help="cap for none-slow-provider (2 s each)")
    parser.add_argument(
        "--callback-delay-ms",
        type=int,
        default=CALLBACK_DELAY_MS,
        help="how long after accepting a message SendGrid's Event Webhook reports it (past the 30 s lease: a "
        "killed worker's request in flight is swept to `unknown` first)",
    )
    parser.add_argument(
        "--send-delay-ms",
        type=int,
        help="how long the sandbox takes per SendGrid request while a fault strikes (20 ms; 40 for the Redis "
        "faults): longer makes a kill more likely to land while a request is at the provider",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a fault may take to settle")
    parser.add_argument("--database", default=f"signalbox_faults_{os.getpid()}")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.list:
        for name, (what, _) in FAULTS.items():
            print(f"{name:24} {what}")
        return
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="signalbox-faults-"))
    log(f"logs in {work}")
    bench = Bench(args, work)
    bench.configure()
    rows: list[Row] = []
    try:
        bench.start()
        for name in args.fault or list(FAULTS):
            log(f"{name}: {FAULTS[name][0]}")
            row = Row(name)
            try:
                FAULTS[name][1](bench, row)
            except SystemExit as exc:
                row.violations.append(f"did not complete: {exc}")
            finally:
                bench.finish()
            log(f"  {row}")
            rows.append(row)
    finally:
        bench.stop()
    report(rows, args)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2, default=str))
    sys.exit(0 if all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()
