"""Realtime benchmark: idle connections and memory on one realtime process, end-to-end latency of
inbox items, and the polling alternative measured in the same run.

    .venv/bin/python -m bench.realtime.run --connections 1000 --rate 1000 --seconds 10

It creates, migrates and drops its own database (`signalbox_bench_realtime`), makes
`--connections` recipients with an inbox token each, starts one realtime process (uvicorn
project.asgi, as in the Procfile) and opens one WebSocket per recipient from a client process.
Then:

1. idle: the process's resident memory before and after the connections (memory per connection),
   each connection's time to `ready`, and the process's CPU while every stream is idle; the connect
   phase is bounded (`--connect-limit`) and reports how many opened;
2. latency: for `--seconds`, every 100 ms one notification to `rate/10` connected recipients goes
   through the production fan-out (`notification_fan_out` + `fanout_chunk_run`: COPY insert, then
   the after-commit publish); each client stamps the arrival of its item. Reported: commit → client
   (the commit time is taken in `transaction.on_commit`), p50 / p99 / max, and items lost;
3. polling: the same recipients' `GET /api/v1/inbox/?unread=true` answered in-process by the API
   (Django's test client, so no network): its cost per request, hence the requests per second and
   the API processes a fleet of pollers needs to be as fresh as the stream's p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import database_create, database_drop, log

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "signalbox_bench_realtime"


def configure(args: argparse.Namespace) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DEBUG": "0",
            "SIGNALBOX_ALLOW_INSECURE_SETTINGS": "1",  # a measurement, not a deployment
            "SECRET_KEY": "bench-only-secret-key-do-not-deploy-5b0e7",
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "localhost,testserver",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
            "CONN_MAX_AGE": "600",
            "CELERY_BROKER_URL": args.redis,
            "CELERY_BROKER_KEYPREFIX": f"sbxbenchrt:{os.getpid()}:",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "console",
            "SIGNALBOX_REALTIME_MAX_PER_TENANT": str(args.connections + 100),
            "SIGNALBOX_REALTIME_REPLAY_LIMIT": "100000",
        }
    )
    sys.path.insert(0, str(ROOT))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- the client process ---------------------------------------------------------------------------


def clients(port: int, tokens: list[str], control: Any, connect_limit: float) -> None:
    """Holds one WebSocket per token; stamps each inbox item's arrival by notification id."""
    import websockets

    arrivals: list[tuple[str, float]] = []
    closed: list[int] = []

    connect_ms: list[float] = []

    async def one(token: str, ready: asyncio.Event, counter: list[int]) -> None:
        started = time.monotonic()
        try:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/api/v1/inbox/stream/?token={token}", open_timeout=600, max_queue=64
            ) as ws:
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "ready":
                        connect_ms.append((time.monotonic() - started) * 1000)
                        counter[0] += 1
                        if counter[0] == len(tokens):
                            ready.set()
                    elif message["type"] == "inbox.item":
                        arrivals.append((message["data"]["notification"], time.time()))
        except Exception:
            closed.append(1)

    async def main() -> None:
        ready = asyncio.Event()
        counter = [0]
        tasks = []
        started = time.monotonic()
        for i, token in enumerate(tokens):
            tasks.append(asyncio.create_task(one(token, ready, counter)))
            if i % 200 == 199:
                await asyncio.sleep(0.05)  # a reconnect storm is not what this measures
        with contextlib.suppress(TimeoutError):  # bounded: report how far it got
            await asyncio.wait_for(ready.wait(), timeout=connect_limit)
        control.send(("connected", time.monotonic() - started, counter[0], connect_ms, len(closed)))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, control.recv)  # "report"
        control.send(("arrivals", arrivals, len(closed)))
        for task in tasks:
            task.cancel()

    asyncio.run(main())


# --- the driver -----------------------------------------------------------------------------------


def setup(n: int) -> tuple[Any, list[Any], list[str], str]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.notifications.models import Recipient
    from apps.notifications.services.inbox import inbox_token_mint
    from apps.notifications.services.recipients import recipients_upsert
    from apps.notifications.services.templates import template_create
    from apps.tenancy.services import api_key_create, tenant_create

    tenant = tenant_create(slug="bench", name="Bench")
    key, clear = api_key_create(tenant=tenant, name="bench", scopes=None)
    template_create(
        tenant=tenant,
        key="ping",
        definition={
            "name": "ping",
            "category": "bench",
            "variables": [{"name": "n", "example": "1"}],
            "default_channels": ["in_app"],
            "content": {"default": {"in_app": {"title": "Ping {{ n }}", "body": "b"}}},
        },
    )
    for start in range(0, n, 5000):
        recipients_upsert(tenant=tenant, items=[{"external_id": f"r-{i}"} for i in range(start, min(n, start + 5000))])
    recipients = list(Recipient.objects.filter(tenant=tenant).order_by("pk"))
    tokens = [inbox_token_mint(recipient=r, key_prefix=key.prefix, ttl_seconds=86400)[0] for r in recipients]
    return tenant, recipients, tokens, clear


def _stamp(commits: dict[str, float], notification_id: str) -> None:
    commits[notification_id] = time.time()


def drive(tenant: Any, recipients: list[Any], rate: int, seconds: float) -> dict[str, float]:
    """Every 100 ms one notification to rate/10 recipients, through the production fan-out."""
    from django.db import transaction

    from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
    from apps.notifications.services.notifications import notification_create

    per_tick = max(1, rate // 10)
    commits: dict[str, float] = {}
    deadline = time.monotonic() + seconds
    tick = time.monotonic()
    while time.monotonic() < deadline:
        audience = [r.external_id for r in random.sample(recipients, min(per_tick, len(recipients)))]
        notification = notification_create(tenant=tenant, template="ping", payload={"n": "1"}, recipients=audience)
        for chunk_id in notification_fan_out(notification_id=notification.pk):
            with transaction.atomic():
                # Registered first, so it runs first at commit: before the publish it measures.
                transaction.on_commit(functools.partial(_stamp, commits, str(notification.pk)))
                fanout_chunk_run(chunk_id=chunk_id)
        tick += 0.1
        time.sleep(max(0.0, tick - time.monotonic()))
    return commits


def polling_cost(token: str, samples: int) -> float:
    """Seconds of API work per inbox poll (in-process test client: no network, no gunicorn)."""
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Recipient {token}")
    for _ in range(20):
        client.get("/api/v1/inbox/", {"unread": "true"})
    started = time.perf_counter()
    for _ in range(samples):
        assert client.get("/api/v1/inbox/", {"unread": "true"}).status_code == 200
    return (time.perf_counter() - started) / samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000, help="inbox items per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path, help="run the realtime process under cProfile, stats to this file")
    parser.add_argument("--connect-limit", type=float, default=420.0, help="seconds to wait for all connections")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle CPU sampled over this long")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    configure(args)
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    database_create(DATABASE)
    import django

    django.setup()
    server = None
    try:
        log(f"setting up {args.connections} recipients and tokens")
        tenant, recipients, tokens, _ = setup(args.connections)
        port = 18000 + os.getpid() % 1000
        command = (
            ["-m", "bench.realtime.profiled", str(args.profile.resolve()), str(port)]
            if args.profile
            else [
                "-m",
                "uvicorn",
                "project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--backlog",
                "4096",
            ]
        )
        server = subprocess.Popen([sys.executable, *command], cwd=ROOT, env={**os.environ, "ASGI_THREADS": "8"})
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(1)
        rss_before = rss_kib(server.pid)
        parent, child = multiprocessing.Pipe()
        load_before = os.getloadavg()
        client_proc = multiprocessing.Process(target=clients, args=(port, tokens, child, args.connect_limit))
        client_proc.start()
        _, connect_seconds, connected, connect_ms, refused = parent.recv()
        time.sleep(2)
        rss_after = rss_kib(server.pid)
        load_connected = os.getloadavg()
        log(f"{connected}/{args.connections} connected in {connect_seconds:.1f}s; RSS {rss_before} -> {rss_after} KiB")
        idle_cpu = cpu_seconds(server.pid)
        time.sleep(args.idle_seconds)  # idle: what the open streams cost by themselves
        idle_cpu = (cpu_seconds(server.pid) - idle_cpu) / args.idle_seconds
        log(f"idle: the realtime process used {idle_cpu * 100:.1f}% of a core with {connected} streams open")

        log(f"driving {args.rate} items/s for {args.seconds}s")
        commits = drive(tenant, recipients, args.rate, args.seconds)
        time.sleep(3)
        rss_loaded = rss_kib(server.pid)
        parent.send("report")
        _, arrivals, closed = parent.recv()
        client_proc.join(10)
        latencies = [(at - commits[nid]) * 1000 for nid, at in arrivals if nid in commits]
        expected = sum(1 for _ in commits) * max(1, args.rate // 10)  # every recipient is connected unless refused
        poll = polling_cost(tokens[0], 300)
        p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
        report = {
            "connections": args.connections,
            "connected": connected,
            "refused_or_failed": refused,
            "connect_seconds": round(connect_seconds, 1),
            "connect_ms": {"p50": round(pct(connect_ms, 0.5), 1), "p99": round(pct(connect_ms, 0.99), 1)},
            "idle_cpu_percent_of_a_core": round(idle_cpu * 100, 1),
            "rss_idle_before_mib": round(rss_before / 1024, 1),
            "rss_idle_after_mib": round(rss_after / 1024, 1),
            "kib_per_connection": round((rss_after - rss_before) / max(connected, 1), 1),
            "rss_after_load_mib": round(rss_loaded / 1024, 1),
            "rate_items_per_s": args.rate,
            "items_expected": expected,
            "items_received": len(latencies),
            "connections_closed": closed,
            "commit_to_client_ms": {
                "p50": round(p50, 1),
                "p99": round(p99, 1),
                "max": round(max(latencies), 1) if latencies else None,
                "mean": round(statistics.fmean(latencies), 1) if latencies else None,
            },
            "poll_ms_per_request": round(poll * 1000, 2),
            # A poller every T seconds is on average T/2 stale and at worst T: to match the stream's
            # p50, T = 2 * p50; to match its p99, T = p99.
            "pollers_rps_for_p50": round(args.connections / (2 * p50 / 1000)),
            "pollers_rps_for_p99": round(args.connections / (p99 / 1000)),
            "api_cores_for_p99": round(args.connections / (p99 / 1000) * poll, 1),
            "load_average": {"before": load_before, "connected": load_connected, "end": os.getloadavg()},
        }
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            database_drop(DATABASE)


if __name__ == "__main__":
    main()
