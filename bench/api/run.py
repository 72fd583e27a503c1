"""API benchmark: what a request costs beyond DRF's own, each path beside a bare DRF ceiling in one run.

    .venv/bin/python -m bench.api.run --seconds 10 --connections 16

It creates, migrates and drops its own database (`signalbox_bench_api`), seeds a tenant, a key, the
README's `welcome` template and its recipient, and a tracked task to poll. Then:

1. in process (Django's test client): the SQL statements of each request, the Python function calls per
   request under cProfile (a proxy for CPU that the machine's load does not change; `--profile-top N`
   prints each path's top functions, `--in-process-only` stops there), and where a request's time
   goes, middleware by middleware and in the view (timing marks between the middlewares, over a few hundred requests);
2. over HTTP: gunicorn as in production (`project/gunicorn.py`, DEBUG off, 2 workers), a load process
   holding `--connections` keep-alive connections, for each path: requests/s and p50/p99, beside the
   ceiling (bench/api/ceiling.py: a DRF view that parses the body and writes one row, or reads one).

Ratios to the ceiling are the figures that travel between machines; the absolute numbers do not.
Results go to bench/results/api.json, compared with the previous file (bench/common.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    bench_environment,
    database_create,
    database_drop,
    free_port,
    log,
    pct,
    results_compare,
    results_write,
)

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "signalbox_bench_api"
TARGETS = {"notification_post": 0.60, "task_poll": 0.80, "task_poll_304": 0.90}


def configure(args: argparse.Namespace) -> dict[str, str]:
    env = bench_environment(
        database_url=f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        broker_url=args.redis,
        prefix="sbxbenchapi",
        DJANGO_SETTINGS_MODULE="bench.api.settings",
        CACHE_URL=f"{args.redis.rstrip('/0')}/14",
        API_RATE_LIMIT="100000000/min",
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    return env


def seed() -> dict[str, Any]:
    """The tenant, key, template, recipient and a task; returns what the requests need."""
    import io

    import django
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    django.setup()
    call_command("migrate", verbosity=0)
    from apps.notifications.management.commands.bootstrap_demo import DEMO_TEMPLATE
    from bench.api.ceiling import CREATE, TABLE

    with connection.cursor() as cursor:
        cursor.execute(CREATE)
        cursor.execute(f"INSERT INTO {TABLE} (body) VALUES ('{{}}') RETURNING id")
        (row_id,) = cursor.fetchone()
    # Through the CLI and the API, as a user would: the seed does not depend on service signatures.
    call_command("createtenant", "bench", stdout=io.StringIO())
    out = io.StringIO()
    call_command("createapikey", "bench", "--name", "bench", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    for path, body in (
        ("/api/v1/templates/", {"key": "welcome", **DEMO_TEMPLATE}),
        ("/api/v1/recipients/", {"external_id": "ada", "email": "ada@example.com", "name": "Ada"}),
        ("/api/v1/tasks/", {"name": "signalbox.exports.deliveries_csv", "input": {}}),
    ):
        answer = client.post(path, body, content_type="application/json")
        assert answer.status_code in (201, 202), (path, answer.status_code, answer.content[:500])
    task_id = answer.json()["id"]
    etag = client.get(f"/api/v1/tasks/{task_id}/")["ETag"]
    return {"key": key, "row": row_id, "task": task_id, "etag": etag}


def requests_of(seeded: dict[str, Any]) -> dict[str, dict[str, Any]]:
    auth = {"Authorization": f"Bearer {seeded['key']}"}
    body = json.dumps({"template": "welcome", "recipients": ["ada"], "payload": {"product": "Signalbox"}})
    task = f"/api/v1/tasks/{seeded['task']}/"
    return {
        "ceiling_post": {"method": "POST", "path": "/bench/bare/", "body": body, "headers": {}},
        "notification_post": {"method": "POST", "path": "/api/v1/notifications/", "body": body, "headers": auth},
        "ceiling_get": {"method": "GET", "path": f"/bench/bare/{seeded['row']}/", "body": None, "headers": {}},
        "task_poll": {"method": "GET", "path": task, "body": None, "headers": auth},
        "task_poll_304": {
            "method": "GET",
            "path": task,
            "body": None,
            "headers": {**auth, "If-None-Match": seeded["etag"]},
        },
    }


# --- in process: statements and time per middleware ------------------------------------------------


def _client_call(client: Any, spec: dict[str, Any]) -> Any:
    headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in spec["headers"].items()}
    if spec["method"] == "POST":
        return client.post(spec["path"], spec["body"], content_type="application/json", **headers)
    return client.get(spec["path"], **headers)


def statements(specs: dict[str, dict[str, Any]]) -> dict[str, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    counts = {}
    for name, spec in specs.items():
        _client_call(client, spec)  # warm: connection, caches
        with CaptureQueriesContext(connection) as captured:
            answer = _client_call(client, spec)
        assert answer.status_code in (200, 202, 304), (name, answer.status_code, answer.content[:300])
        counts[name] = len(captured.captured_queries)
    return counts


def middleware_time(specs: dict[str, dict[str, Any]], n: int) -> dict[str, dict[str, float]]:
    """Per request, ms spent in each middleware itself (not what it wraps) and in the view."""
    from django.conf import settings
    from django.test import Client
    from django.test.utils import override_settings

    from bench.api.timing import MARKS, interleaved, per_layer

    names = [m.rsplit(".", 1)[1] for m in settings.MIDDLEWARE]
    out: dict[str, dict[str, float]] = {}
    with override_settings(MIDDLEWARE=interleaved(list(settings.MIDDLEWARE))):
        client = Client()
        for name, spec in specs.items():
            for _ in range(20):
                _client_call(client, spec)
            MARKS.clear()
            started = time.perf_counter()
            for _ in range(n):
                _client_call(client, spec)
            total = (time.perf_counter() - started) / n * 1000
            spent = per_layer(MARKS, len(names))
            row = {"total_ms": round(total, 3)}
            row.update({layer: round(seconds / n * 1000, 3) for layer, seconds in zip(names, spent, strict=False)})
            row["view_ms"] = round(spent[-1] / n * 1000, 3)
            out[name] = row
    return out


def function_calls(specs: dict[str, dict[str, Any]], n: int, top: int = 0) -> dict[str, int]:
    """Python function calls per request under cProfile (a proxy for CPU that the load does not change);
    with `top`, prints each path's most called functions by cumulative time."""
    import cProfile
    import io
    import pstats

    from django.test import Client

    client = Client()
    out = {}
    for name, spec in specs.items():
        for _ in range(20):
            _client_call(client, spec)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            _client_call(client, spec)
        profiler.disable()
        stats = pstats.Stats(profiler)
        out[name] = round(stats.total_calls / n)  # type: ignore[attr-defined]
        if top:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
            log(f"{name}:\n{text.getvalue()}")
    return out


# --- over HTTP ------------------------------------------------------------------------------------


def load(port: int, spec: dict[str, Any], connections: int, seconds: float, out: Any) -> None:
    """Holds `connections` keep-alive connections sending `spec` for `seconds` (after a 2 s warm-up)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start_at = time.monotonic() + 2.0
    stop_at = start_at + seconds

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        headers = {"Content-Type": "application/json", "Host": "localhost", **spec["headers"]}
        while (now := time.monotonic()) < stop_at:
            began = time.perf_counter()
            try:
                conn.request(spec["method"], spec["path"], body=spec["body"], headers=headers)
                answer = conn.getresponse()
                answer.read()
                ok = answer.status in (200, 202, 304)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            if now >= start_at:
                if ok:
                    mine.append(time.perf_counter() - began)
                else:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(connections)]
    cpu = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.send({"latencies": latencies, "errors": errors[0], "client_cpu_s": time.process_time() - cpu})


def measure(port: int, spec: dict[str, Any], connections: int, seconds: float) -> dict[str, Any]:
    parent, child = multiprocessing.Pipe()
    worker = multiprocessing.get_context("fork").Process(target=load, args=(port, spec, connections, seconds, child))
    worker.start()
    got = parent.recv()
    worker.join()
    latencies = got["latencies"]
    return {
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(pct(latencies, 0.50) * 1000, 1),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 1),
        "errors": got["errors"],
        "load_client_cpu_pct": round(got["client_cpu_s"] / (seconds + 2) * 100, 1),
    }


def gunicorn(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "-c", "python:project.gunicorn", "project.wsgi"],
        cwd=ROOT,
        env={
            **os.environ,
            **env,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "GUNICORN_MAX_REQUESTS": "0",
        },
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/bare/1/", headers={"Host": "localhost"})
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError("gunicorn did not answer within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="each path this many times, interleaved; median kept")
    parser.add_argument("--profile-requests", type=int, default=300)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--in-process-only", action="store_true", help="statements and function calls, no HTTP")
    parser.add_argument("--profile-top", type=int, default=0, help="print each path's top N functions (cProfile)")
    args = parser.parse_args()
    env = configure(args)
    database_create(DATABASE)
    server = None
    try:
        seeded = seed()
        specs = requests_of(seeded)
        log("SQL statements per request, in process")
        sql = statements(specs)
        log(f"  {sql}")
        calls = function_calls(specs, 200, args.profile_top)
        log(f"function calls per request: {calls}")
        if args.in_process_only:
            return
        log(f"where the time goes, over {args.profile_requests} requests each")
        layers = middleware_time(specs, args.profile_requests)
        port = free_port()
        server = gunicorn(env, port)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
        for round_no in range(args.rounds):
            for name, spec in specs.items():
                result = measure(port, spec, args.connections, args.seconds)
                runs[name].append(result)
                log(f"round {round_no + 1} {name}: {result}")
        http_results = {name: _median(rs) for name, rs in runs.items()}
        ratios = {
            "notification_post": http_results["notification_post"]["rps"] / http_results["ceiling_post"]["rps"],
            "task_poll": http_results["task_poll"]["rps"] / http_results["ceiling_get"]["rps"],
            "task_poll_304": http_results["task_poll_304"]["rps"] / http_results["ceiling_get"]["rps"],
        }
        results = {
            "connections": args.connections,
            "seconds": args.seconds,
            "load_average": os.getloadavg(),
            "http": http_results,
            "ratios_to_ceiling": {k: round(v, 3) for k, v in ratios.items()},
            "targets": TARGETS,
            "sql_statements": sql,
            "function_calls_per_request": calls,
            "time_per_layer_ms": layers,
        }
        print(json.dumps(results, indent=2))
        for name, ratio in ratios.items():
            verdict = "met" if ratio >= TARGETS[name] else "NOT met"
            log(f"{name}: {ratio:.0%} of the ceiling (target {TARGETS[name]:.0%}): {verdict}")
        p99 = http_results["notification_post"]["p99_ms"]
        log(f"notification_post p99 {p99} ms (target < 50 ms): {'met' if p99 < 50 else 'NOT met'}")
        path = results_write("api", results)
        results_compare("api", results, path)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        _purge_broker(env["CELERY_BROKER_KEYPREFIX"], args.redis)
        database_drop(DATABASE)


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["rps"])
    middle = ordered[len(ordered) // 2]
    return {**middle, "rps_all": [r["rps"] for r in results], "p99_all": [r["p99_ms"] for r in results]}


def _purge_broker(prefix: str, url: str) -> None:
    """The fan-out messages the POSTs published: nobody consumes them here."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


if __name__ == "__main__":
    main()
