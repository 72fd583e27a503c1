"""Prometheus endpoints outside Django's `/metrics`: each worker's, and the queue exporter.

Two registries, two places (docs/operations.md, "Metrics"):

- `multiprocess_registry(dir)`: the sum of what a worker's prefork children wrote to its
  `PROMETHEUS_MULTIPROC_DIR`, served by the worker's main process on `WORKER_METRICS_PORT`
  (apps/observability/workers.py). Before each scrape, the live gauges of children that died
  without saying so (OOM-killed, SIGKILL) are dropped with `multiprocess.mark_process_dead`.
- `exporter_registry()`: the computed queue metrics (collectors.py), served by
  `python -m apps.observability.exporter --port 9100`, run as exactly one process per deployment.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import structlog
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    multiprocess,
    start_http_server,
)
from prometheus_client.registry import Collector

from apps.observability.checks import check_configuration_or_fail
from apps.observability.collectors import QueueCollector

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def clear_multiprocess_dir(directory: Path) -> None:
    """Creates the directory and removes the files a previous run left in it."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DeadProcessReaper(Collector):
    """Yields nothing; marks dead the processes whose live-gauge files outlived them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        pids = {int(m.group(1)) for p in self.directory.glob("gauge_live*.db") if (m := _LIVE_GAUGE_FILE.match(p.name))}
        for pid in pids:
            if not _alive(pid):
                multiprocess.mark_process_dead(pid, str(self.directory))
        yield from ()


def multiprocess_registry(directory: str | Path) -> CollectorRegistry:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    # Registered first, so the dead are reaped before the files are summed.
    registry.register(DeadProcessReaper(directory))
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return registry


def exporter_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    registry.register(QueueCollector.from_settings())
    return registry


def start_server(*, port: int, addr: str, registry: CollectorRegistry) -> Any:
    """Serves `registry` on a daemon thread; returns the server (call `.shutdown()` to stop)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serves the computed queue metrics for Prometheus.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("METRICS_EXPORTER_PORT", "9100")))
    parser.add_argument("--addr", default=os.environ.get("METRICS_ADDR", "0.0.0.0"))  # noqa: S104 - scraped from outside the pod
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    check_configuration_or_fail()

    server = start_server(port=args.port, addr=args.addr, registry=exporter_registry())
    structlog.get_logger(__name__).info("queue metrics exporter listening", port=args.port, addr=args.addr)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
