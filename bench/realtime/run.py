"""Realtime benchmark: idle connections and memory on one realtime process, end-to-end latency of
inbox items, and the polling alternative measured in the same run.

    .venv/bin/python -m bench.realtime.run --connections 1000 --rate 1000 --seconds 10

It creates, migrates and drops its own database (`signalbox_bench_realtime`), makes
`--connections` recipients with an inbox token each, starts one realtime process (uvicorn
project.asgi, as in the Procfile) and opens one WebSocket per recipient from a client process.
Then:

1. connect: one WebSocket per recipient, paced as real clients are (at most `--connect-concurrency`
   handshakes in flight; a failed one retried with backoff), every failure counted by its cause
   (exception type or close code); the process's resident memory before and after (memory per
   connection), each stream's time to `ready`, and the process's CPU while every stream is idle;
   bounded by `--connect-limit`, reporting how many opened;
2. commit -> client: for `--seconds`, every 100 ms one notification to `rate/10` connected
   recipients goes through the production fan-out in this process (`notification_fan_out` +
   `fanout_chunk_run`: COPY insert, then the after-commit publish); the commit time is taken in
   `transaction.on_commit`, registered before the publish; each client stamps its item's arrival;
3. POST -> client: `--post-rate` POST /api/v1/notifications/ per second, each to `--post-audience`
   connected recipients, through the API in-process (Django's test client), fanned out by a real
   Celery worker (the production app, `-c 2`); latency from just before the POST to the client;
4. polling: the same recipients' `GET /api/v1/inbox/?unread=true` answered in-process by the API
   (Django's test client, so no network): its cost per request, hence the requests per second and
   the API processes a fleet of pollers needs to be as fresh as the stream's p50 and p99.

The load average is reported beside each phase: the machine is shared.
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

from bench.common import bench_environment, database_create, database_drop, log, pct

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "signalbox_bench_realtime"


def configure(args: argparse.Namespace) -> None:
    os.environ.update(
        bench_environment(
            database_url=f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
            broker_url=args.redis,
            prefix="sbxbenchrt",
            SIGNALBOX_REALTIME_MAX_PER_TENANT=str(args.connections + 100),
            SIGNALBOX_REALTIME_REPLAY_LIMIT="100000",
        )
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


# --- the client process ---------------------------------------------------------------------------


def clients(port: int, tokens: list[str], control: Any, connect_limit: float, concurrency: int) -> None:
    """Holds one WebSocket per token; stamps each inbox item's arrival by notification id.

    Connects are paced as real clients' are: at most `concurrency` handshakes in flight, and a
    failed one retried with exponential backoff and jitter (0.5 s doubling to 15 s), resuming with
    the last cursor, as is a stream that drops later. Every failure is counted by its cause (the
    exception type, or the close code)."""
    from collections import Counter

    import websockets
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    arrivals: list[tuple[str, float]] = []
    failures: Counter[str] = Counter()
    connect_ms: list[float] = []  # the successful attempt's handshake to `ready`
    first_ready_ms: list[float] = []  # from the first attempt, retries and waiting included
    gate = asyncio.Semaphore(concurrency)

    def cause(exc: BaseException) -> str:
        if isinstance(exc, ConnectionClosed):
            code = exc.rcvd.code if exc.rcvd is not None else None
            return f"closed {code}" if code is not None else "closed without a frame"
        if isinstance(exc, InvalidStatus):
            return f"HTTP {exc.response.status_code}"
        return type(exc).__name__

    async def one(token: str, ready: asyncio.Event, counter: list[int]) -> None:
        first = time.monotonic()
        cursor: int | None = None
        attempt = 0
        ever = False
        while True:
            try:
                await gate.acquire()
                held = True
                try:
                    started = time.monotonic()
                    query = f"token={token}" + (f"&cursor={cursor}" if cursor is not None else "")
                    async with websockets.connect(
                        f"ws://127.0.0.1:{port}/api/v1/inbox/stream/?{query}", open_timeout=60, max_queue=64
                    ) as ws:
                        async for raw in ws:
                            message = json.loads(raw)
                            if message["type"] == "ready":
                                cursor = int(message["id"])
                                if held:
                                    gate.release()
                                    held = False
                                attempt = 0
                                if not ever:  # this token's first stream
                                    ever = True
                                    connect_ms.append((time.monotonic() - started) * 1000)
                                    first_ready_ms.append((time.monotonic() - first) * 1000)
                                    counter[0] += 1
                                    if counter[0] == len(tokens):
                                        ready.set()
                            elif message["type"] == "inbox.item":
                                cursor = max(cursor or 0, int(message["id"]))
                                arrivals.append((message["data"]["notification"], time.time()))
                    failures["closed by the server (clean)"] += 1
                finally:
                    if held:
                        gate.release()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures[cause(exc)] += 1
            attempt += 1
            await asyncio.sleep(min(15.0, 0.5 * 2 ** min(attempt, 5)) * random.uniform(0.5, 1.0))

    async def main() -> None:
        ready = asyncio.Event()
        counter = [0]  # tokens connected at least once
        started = time.monotonic()
        tasks = [asyncio.create_task(one(token, ready, counter)) for token in tokens]
        with contextlib.suppress(TimeoutError):  # bounded: report how far it got
            await asyncio.wait_for(ready.wait(), timeout=connect_limit)
        control.send(("connected", time.monotonic() - started, counter[0], connect_ms, first_ready_ms, dict(failures)))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, control.recv)
            if command == "report":
                control.send(("arrivals", list(arrivals), dict(failures)))
                arrivals.clear()
            else:
                break
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


QUEUES = "notifications.high,notifications.default,notifications.bulk,maintenance"


def worker_start(log_path: Path) -> subprocess.Popen[bytes]:
    """A real Celery worker (the production app) on the notification queues: it runs the fan-out
    of what the API accepts, and publishes to the streams after each chunk commits."""
    from workers.celery import app

    name = f"benchrt-{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-Q", QUEUES, "-c", "2",
         "-P", "prefork", "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat",
         "-l", "WARNING"],
        cwd=ROOT, env=os.environ.copy(), stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited at start; see {log_path}")
        if any(name in next(iter(r)) for r in app.control.ping(timeout=0.5) or []):
            return proc
    raise SystemExit(f"the worker did not answer within 60 s; see {log_path}")


def drive_posts(key: str, recipients: list[Any], rate: float, audience: int, seconds: float) -> dict[str, Any]:
    """`rate` POST /api/v1/notifications/ per second, each to `audience` random connected
    recipients, through the API in-process (Django's test client); the Celery worker fans out.
    Returns each notification's POST start time, and the API's own answer times."""
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    posted: dict[str, float] = {}
    answer_ms: list[float] = []
    deadline = time.monotonic() + seconds
    tick = time.monotonic()
    while time.monotonic() < deadline:
        body = {
            "template": "ping",
            "payload": {"n": "1"},
            "recipients": [r.external_id for r in random.sample(recipients, min(audience, len(recipients)))],
        }
        at, started = time.time(), time.perf_counter()
        response = client.post("/api/v1/notifications/", body, content_type="application/json")
        answer_ms.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 202, response.content
        posted[str(response.json()["id"])] = at
        tick += 1 / rate
        time.sleep(max(0.0, tick - time.monotonic()))
    return {"posted": posted, "answer_ms": answer_ms}


def latency_summary(arrivals: list[tuple[str, float]], starts: dict[str, float], expected: int) -> dict[str, Any]:
    latencies = [(at - starts[nid]) * 1000 for nid, at in arrivals if nid in starts]
    return {
        "items_expected": expected,
        "items_received": len(latencies),
        "p50_ms": round(pct(latencies, 0.5), 1),
        "p99_ms": round(pct(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
    }


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
    parser.add_argument("--connect-concurrency", type=int, default=64, help="handshakes in flight at once")
    parser.add_argument(
        "--backlog", type=int, default=16384, help="uvicorn --backlog (the kernel caps it at somaxconn)"
    )
    parser.add_argument("--post-rate", type=float, default=5.0, help="POSTs per second for POST -> client (0: skip)")
    parser.add_argument("--post-audience", type=int, default=20, help="recipients per POST")
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
        tenant, recipients, tokens, clear_key = setup(args.connections)
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
                str(args.backlog),
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
        client_proc = multiprocessing.Process(
            target=clients, args=(port, tokens, child, args.connect_limit, args.connect_concurrency)
        )
        client_proc.start()
        _, connect_seconds, connected, connect_ms, first_ready_ms, failures = parent.recv()
        time.sleep(2)
        rss_after = rss_kib(server.pid)
        load_connected = os.getloadavg()
        log(f"{connected}/{args.connections} connected in {connect_seconds:.1f}s; RSS {rss_before} -> {rss_after} KiB")
        log(f"connect failures (then retried): {failures}")
        idle_cpu = cpu_seconds(server.pid)
        time.sleep(args.idle_seconds)  # idle: what the open streams cost by themselves
        idle_cpu = (cpu_seconds(server.pid) - idle_cpu) / args.idle_seconds
        load_idle = os.getloadavg()
        log(f"idle: the realtime process used {idle_cpu * 100:.1f}% of a core with {connected} streams open")

        log(f"commit -> client: {args.rate} items/s for {args.seconds}s through the fan-out in this process")
        load_start = os.getloadavg()
        commits = drive(tenant, recipients, args.rate, args.seconds)
        time.sleep(10)  # what is still queued arrives (and is counted) before the next phase
        parent.send("report")
        _, arrivals, _ = parent.recv()
        from_commit = latency_summary(arrivals, commits, len(commits) * max(1, args.rate // 10))
        from_commit["load_average"] = {"start": load_start, "end": os.getloadavg()}
        log(f"commit -> client: {from_commit}")

        from_post: dict[str, Any] = {}
        if args.post_rate > 0:
            worker = worker_start(Path(f"/tmp/bench-realtime-worker-{os.getpid()}.log"))
            try:
                log(f"POST -> client: {args.post_rate}/s POSTs x {args.post_audience} recipients for {args.seconds}s")
                load_start = os.getloadavg()
                posts = drive_posts(clear_key, recipients, args.post_rate, args.post_audience, args.seconds)
                time.sleep(20)  # the worker drains what was accepted last
                parent.send("report")
                _, arrivals, _ = parent.recv()
                from_post = latency_summary(arrivals, posts["posted"], len(posts["posted"]) * args.post_audience)
                from_post["post_answer_ms"] = {
                    "p50": round(pct(posts["answer_ms"], 0.5), 1),
                    "p99": round(pct(posts["answer_ms"], 0.99), 1),
                }
                from_post["items_per_s"] = args.post_rate * args.post_audience
                from_post["load_average"] = {"start": load_start, "end": os.getloadavg()}
                log(f"POST -> client: {from_post}")
            finally:
                worker.terminate()
                worker.wait(60)
        rss_loaded = rss_kib(server.pid)
        parent.send("report")
        _, _, failures_total = parent.recv()
        parent.send("stop")
        client_proc.join(10)
        poll = polling_cost(tokens[0], 300)
        p50, p99 = from_commit["p50_ms"], from_commit["p99_ms"]
        report = {
            "connections": args.connections,
            "connected": connected,
            "connect_concurrency": args.connect_concurrency,
            "connect_failures_retried": failures,
            "stream_failures_whole_run": failures_total,
            "connect_seconds": round(connect_seconds, 1),
            "connects_per_second": round(connected / connect_seconds, 1) if connect_seconds else None,
            "connect_ms": {"p50": round(pct(connect_ms, 0.5), 1), "p99": round(pct(connect_ms, 0.99), 1)},
            "first_ready_ms_with_waiting": {
                "p50": round(pct(first_ready_ms, 0.5), 1),
                "p99": round(pct(first_ready_ms, 0.99), 1),
            },
            "idle_cpu_percent_of_a_core": round(idle_cpu * 100, 1),
            "rss_idle_before_mib": round(rss_before / 1024, 1),
            "rss_idle_after_mib": round(rss_after / 1024, 1),
            "kib_per_connection": round((rss_after - rss_before) / max(connected, 1), 1),
            "rss_after_load_mib": round(rss_loaded / 1024, 1),
            "rate_items_per_s": args.rate,
            "commit_to_client": from_commit,
            "post_to_client": from_post,
            "poll_ms_per_request": round(poll * 1000, 2),
            # A poller every T seconds is on average T/2 stale and at worst T: to match the stream's
            # p50, T = 2 * p50; to match its p99, T = p99.
            "pollers_rps_for_p50": round(args.connections / (2 * p50 / 1000)),
            "pollers_rps_for_p99": round(args.connections / (p99 / 1000)),
            "api_cores_for_p99": round(args.connections / (p99 / 1000) * poll, 1),
            "load_average": {
                "before": load_before,
                "connected": load_connected,
                "idle": load_idle,
                "end": os.getloadavg(),
            },
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
