"""Email benchmark: N emails end to end through the real adapters into the provider sandbox, with
real Celery workers on PostgreSQL and Redis, beside the `sink` adapter (the platform's ceiling) in
the same run.

    .venv/bin/python -m bench.email.run --emails 20000

Each run: one notification to N recipients on the email channel, priority bulk, content shared by
every recipient (the SendGrid batch path: 1000 personalizations a request, each with its own
delivery id, unsubscribe headers and custom args), for each path in turn:

- `sink`: the built-in sink adapter, no network (what the pipeline alone reaches);
- `smtp`: the SMTP adapter into the sandbox's SMTP server (aiosmtpd), one connection per batch;
- `sendgrid`: the SendGrid adapter into the sandbox's Mail Send endpoint.

Then the SMTP adapter alone (`--adapter-emails`, in this process, no pipeline) over one and over
four connections: its CPU and the sandbox's per email, which say whose CPU a faster run would
wait for.

Reported per path: emails/s from the notification's creation to its completion, SQL statements
per delivery (every statement of every worker process), the sandbox process's CPU seconds over
the run (and as a share of the wall time: near 100 % the sandbox is the ceiling, one core) and the
messages it recorded; the load average before and after (the machine may be shared). Results go
to `bench/results/email.json`, compared with the previous run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import log, results_compare, results_write
from bench.fanout.run import Worker, configure, ensure_database, reset_counter, worker_queries

CONTENT = {
    "email": {
        "subject": "Your {{ period }} statement is ready",
        "text": "Hello,\n\nyour statement for {{ period }} is ready.",
        "html": "<p>Hello,</p><p>your statement for <b>{{ period }}</b> is ready.</p>",
    }
}
PATHS = ("sink", "smtp", "sendgrid")


@dataclass
class Result:
    path: str
    emails: int
    seconds: float
    per_s: float
    queries_per_delivery: float
    sandbox_cpu_seconds: float
    sandbox_cpu_share: float
    sandbox_messages: int
    details: dict[str, Any] = field(default_factory=dict)


def tenant_for(path: str, sandbox: Any, emails: int) -> Any:
    """A tenant whose email goes through `path`, with `emails` recipients in topic `all`."""
    from apps.notifications.models import Recipient, Topic, TopicMembership
    from apps.notifications.services.recipients import recipients_upsert
    from apps.providers.models import ProviderConfig
    from apps.providers.services import provider_config_create
    from apps.tenancy.models import Tenant
    from sandbox import config as sandbox_config

    slug = f"bench-email-{path}"
    tenant = Tenant.objects.filter(slug=slug).first() or Tenant.objects.create(slug=slug, name=slug)
    tenant.settings = {"channel_providers": {"email": ["sink"]}} if path == "sink" else {}
    tenant.save(update_fields=["settings"])
    ProviderConfig.objects.filter(tenant=tenant).delete()
    if path == "smtp":
        options = {"host": sandbox.smtp_host, "port": sandbox.smtp_port, "from_email": "bench@acme.test"}
        provider_config_create(tenant=tenant, name="relay", provider="smtp", options=options)
    elif path == "sendgrid":
        provider_config_create(
            tenant=tenant,
            name="sendgrid",
            provider="sendgrid",
            options={"host": sandbox.http_url, "from_email": "bench@acme.test"},
            secrets={"api_key": sandbox_config.DEFAULT_SENDGRID_API_KEY},
        )
    have = Recipient.objects.filter(tenant=tenant).count()
    for start in range(have, emails, 10000):
        recipients_upsert(
            tenant=tenant,
            items=[
                {"external_id": f"r{i:07d}", "email": f"r{i:07d}@example.com", "name": f"Recipient {i}"}
                for i in range(start, min(start + 10000, emails))
            ],
        )
    topic, _ = Topic.objects.get_or_create(tenant=tenant, key="all")
    if TopicMembership.objects.filter(topic=topic).count() != emails:
        TopicMembership.objects.filter(topic=topic).delete()
        ids = Recipient.objects.filter(tenant=tenant).order_by("pk").values_list("pk", flat=True)[:emails]
        TopicMembership.objects.bulk_create([TopicMembership(topic=topic, recipient_id=pk) for pk in ids], 10000)
    return tenant


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_path(path: str, sandbox: Any, args: argparse.Namespace, log_dir: Path) -> Result:
    from django.db.models import Count

    from apps.notifications.models import Delivery, Notification
    from apps.notifications.services.notifications import notification_create
    from bench.fanout.run import reset_pipeline_tables

    tenant = tenant_for(path, sandbox, args.emails)
    reset_pipeline_tables()
    sandbox.client.reset()
    worker = Worker(args.concurrency, log_dir / f"worker-{path}.log")
    worker.start()
    reset_counter()
    load_before = round(os.getloadavg()[0], 2)
    sandbox_pid = sandbox._process.pid
    cpu_before = cpu_seconds(sandbox_pid)
    try:
        started = time.perf_counter()
        notification = notification_create(
            tenant=tenant,
            content=CONTENT,
            category="statements",
            payload={"period": "2030-01"},
            topic="all",
            channels=["email"],
            priority="bulk",
        )
        deadline = time.monotonic() + args.timeout
        while Notification.objects.filter(pk=notification.pk, status="completed").count() == 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"{path}: no completion after {args.timeout} s; see {worker.log_path}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(sandbox_pid) - cpu_before
        time.sleep(0.5)  # the last task's counter flush follows its postrun
        queries = worker_queries()
    finally:
        worker.stop()
    states = dict(
        Delivery.objects.filter(notification=notification).values_list("status").annotate(n=Count("*")).order_by()
    )
    if states != {"sent": args.emails}:
        raise SystemExit(f"{path}: unexpected delivery states {states}")
    received = sum(int(entry.get("messages", 0)) for entry in sandbox.client.counts()["providers"].values())
    return Result(
        path=path,
        emails=args.emails,
        seconds=round(elapsed, 2),
        per_s=round(args.emails / elapsed),
        queries_per_delivery=round(queries / args.emails, 3),
        sandbox_cpu_seconds=round(cpu, 2),
        sandbox_cpu_share=round(cpu / elapsed, 2),
        sandbox_messages=received,
        details={"load_1m_before_after": [load_before, round(os.getloadavg()[0], 2)]},
    )


def adapter_costs(sandbox: Any, emails: int, connections: int) -> dict[str, float]:
    """The SMTP adapter alone, in this process, into the sandbox: `emails` messages in requests of
    MAX_MESSAGES_PER_REQUEST over `connections` connections, no pipeline. Its CPU and the
    sandbox's per message say which side a faster run would wait for."""
    from apps.providers.adapters.smtp import MAX_MESSAGES_PER_REQUEST, SmtpProvider
    from apps.providers.base import Channel, Message

    adapter = SmtpProvider(
        host=sandbox.smtp_host, port=sandbox.smtp_port, from_email="bench@acme.test", connections=connections
    )
    adapter.trusted = True
    messages = [
        Message(
            channel=Channel.EMAIL,
            to=f"a{i:07d}@example.com",
            idempotency_key=str(uuid.uuid4()),
            tenant_id="bench",
            subject="Your 2030-01 statement is ready",
            text="Hello,\n\nyour statement for 2030-01 is ready.",
            html="<p>Hello,</p><p>your statement for <b>2030-01</b> is ready.</p>",
            recipient_id=str(i + 1),
            category="statements",
            list_unsubscribe=True,
        )
        for i in range(emails)
    ]
    sandbox.client.reset()
    sandbox_before, cpu_before, started = cpu_seconds(sandbox._process.pid), time.process_time(), time.perf_counter()
    with adapter.session():
        for start in range(0, emails, MAX_MESSAGES_PER_REQUEST):
            results = adapter.send_batch(messages[start : start + MAX_MESSAGES_PER_REQUEST])
            if not all(r.accepted for r in results):
                raise SystemExit(f"adapter run: not accepted: {next(r for r in results if not r.accepted)}")
    elapsed = time.perf_counter() - started
    client_cpu, sandbox_cpu = time.process_time() - cpu_before, cpu_seconds(sandbox._process.pid) - sandbox_before
    return {
        "connections": connections,
        "per_s": round(emails / elapsed),
        "adapter_cpu_us_per_email": round(client_cpu / emails * 1e6),
        "sandbox_cpu_us_per_email": round(sandbox_cpu / emails * 1e6),
        "sandbox_cpu_share": round(sandbox_cpu / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=20000)
    parser.add_argument("--paths", default=",".join(PATHS), help="Which of sink, smtp, sendgrid, in this order.")
    parser.add_argument("--concurrency", type=int, default=2, help="Worker processes.")
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--send-batch", type=int, default=1000)
    parser.add_argument("--database", default="signalbox_bench_email")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--adapter-emails",
        type=int,
        default=5000,
        help="Also send this many through the SMTP adapter alone, in this process (0: not).",
    )
    args = parser.parse_args()

    configure(args)
    # The sandbox listens on 127.0.0.1: let tenants' provider configs point there.
    os.environ["SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE"] = "1"
    ensure_database(args)
    import django

    django.setup()
    from django.core.management import call_command

    from sandbox.testing import SandboxProcess

    log(f"migrating {args.database}")
    call_command("migrate", verbosity=0)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"signalbox-bench-email-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    adapter: list[dict[str, float]] = []
    with SandboxProcess() as sandbox:
        for path in args.paths.split(","):
            log(f"{path}: {args.emails:,} emails")
            results.append(run_path(path, sandbox, args, log_dir))
            log(f"  {results[-1]}")
        for connections in (1, 4) if args.adapter_emails else ():
            log(f"the SMTP adapter alone: {args.adapter_emails:,} emails over {connections} connection(s)")
            adapter.append(adapter_costs(sandbox, args.adapter_emails, connections))
            log(f"  {adapter[-1]}")
    report(results, args, adapter)


def report(results: list[Result], args: argparse.Namespace, adapter: list[dict[str, float]]) -> None:
    sink = next((r for r in results if r.path == "sink"), None)
    print("\n| path | emails | seconds | emails/s | vs sink | SQL / delivery | sandbox CPU s (share of wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = f"{r.per_s / sink.per_s:.2f}" if sink else "—"
        print(
            f"| {r.path} | {r.emails:,} | {r.seconds} | {r.per_s:,.0f} | {ratio} | {r.queries_per_delivery} "
            f"| {r.sandbox_cpu_seconds} ({r.sandbox_cpu_share:.0%}) |"
        )
    if adapter:
        print(
            "\n| SMTP adapter alone: connections | emails/s | adapter CPU µs / email "
            "| sandbox CPU µs / email (share of wall) |"
        )
        print("|---:|---:|---:|---:|")
        for a in adapter:
            print(
                f"| {a['connections']} | {a['per_s']:,.0f} | {a['adapter_cpu_us_per_email']} "
                f"| {a['sandbox_cpu_us_per_email']} ({a['sandbox_cpu_share']:.0%}) |"
            )
    environment = {
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "worker_processes": args.concurrency,
        "send_batch": args.send_batch,
    }
    print(f"environment: {environment}")
    payload = {
        "results": {r.path: asdict(r) for r in results},
        "ratios_to_sink": {r.path: round(r.per_s / sink.per_s, 3) for r in results} if sink else {},
        "smtp_adapter_alone": {f"connections_{int(a['connections'])}": a for a in adapter},
        "environment": environment,
    }
    path = results_write("email", payload)
    results_compare("email", payload, path)


if __name__ == "__main__":
    main()
