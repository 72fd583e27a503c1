"""Fixtures and helpers of the fault-injection suite (docs/reliability.md, "How each fault is injected").

- `sandboxed`: the `acme` tenant with its own provider configs for every channel, each pointed at
  the session's provider sandbox (SendGrid then SMTP for email, Twilio, FCM, webhooks), and
  short retry waits in its settings, so any worker (the session's, or one a test owns) sends
  into the sandbox and retries quickly.
- `send(...)`: records a notification through the service, as the API does.
- `settle(...)`: drives the dispatcher and the sweeper (their task functions, called here) as
  beat would, with the clock moved forward, until nothing is in flight.
- `assert_delivered_once(...)`: the invariant every fault test ends with.
- `own_queue(...)`: makes test-owned workers the only consumers of a queue (the session worker,
  if one runs, stops consuming it meanwhile), so the worker a test kills is the one sending.
- `redis_server`: a redis-server of the test's own, on a free port, without persistence, that a
  test may restart; never the machine's Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from apps.notifications import conf
from apps.notifications.models import Delivery, DeliveryAttempt, Notification
from apps.notifications.services.dispatch import dispatch_due, sweep
from apps.notifications.services.notifications import notification_create
from apps.providers.services import provider_config_create
from sandbox.pytest_plugin import sandbox, sandbox_client
from sandbox.testing import SandboxClient, SandboxProcess
from tests.conftest import wait_for
from tests.providers.conftest import WEBHOOK_SECRET, sandbox_config_for

__all__ = ["sandbox", "sandbox_client"]

CONTENT = {
    "email": {"subject": "Order {{ order }} shipped", "text": "Order {{ order }} is on its way."},
    "sms": {"text": "Order {{ order }} shipped."},
    "push": {"title": "Shipped", "body": "Order {{ order }}"},
    "webhook": {"body": {"order": "{{ order }}"}},
    "in_app": {"title": "Order {{ order }} shipped", "body": "Track it."},
}
FAST_RETRIES = {"max_attempts": 4, "base_seconds": 0.05, "cap_seconds": 0.2}
SANDBOX_PROVIDERS = ("sendgrid", "smtp", "twilio", "fcm", "webhook")


def _configure(tenant: Any, name: str, provider: str, config: dict[str, Any], secret_fields: Sequence[str], **kw: Any):
    options = {k: v for k, v in config.items() if k not in secret_fields}
    secrets = {k: v for k, v in config.items() if k in secret_fields}
    provider_config_create(tenant=tenant, name=name, provider=provider, options=options, secrets=secrets, **kw)


@pytest.fixture
def sandboxed(tenant: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient, tmp_path: Path) -> Any:
    """The acme tenant, every channel on the sandbox, retries within a fraction of a second."""
    _configure(
        tenant, "sendgrid", "sendgrid", sandbox_config_for(sandbox, "sendgrid", timeout=2), ["api_key"], priority=1
    )
    _configure(tenant, "relay", "smtp", sandbox_config_for(sandbox, "smtp", timeout=2), [], priority=2)
    _configure(tenant, "twilio", "twilio", sandbox_config_for(sandbox, "twilio", timeout=2), ["auth_token"])
    account = sandbox.client.write_service_account(tmp_path / "fcm.json")
    _configure(
        tenant,
        "fcm",
        "fcm",
        {"endpoint": f"{sandbox.http_url}/v1/projects", "timeout": 2, "service_account_json": account.read_text()},
        ["service_account_json"],
    )
    _configure(tenant, "hooks", "webhook", {"signing_secret": WEBHOOK_SECRET, "timeout": 2}, ["signing_secret"])
    tenant.settings = {**tenant.settings, "retry_policy": FAST_RETRIES}
    tenant.save(update_fields=["settings"])
    return tenant


def send(
    tenant: Any,
    recipients: Sequence[Any],
    channels: Sequence[str],
    *,
    priority: str = "bulk",
    category: str = "orders",
    **fields: Any,
) -> Notification:
    content = {c: CONTENT[c] for c in channels}
    return notification_create(
        tenant=tenant,
        content=content,
        category=category,
        payload={"order": "A-7"},
        recipients=list(recipients),
        channels=list(channels),
        priority=priority,
        **fields,
    )


def people(n: int, prefix: str = "p", *, first: int = 0, **attrs: Any) -> list[dict[str, Any]]:
    """Recipient objects `<prefix>-<i>` with an email and a phone (+1415555<1000 + first + i>)."""
    return [
        {
            "external_id": f"{prefix}-{i}",
            "email": f"{prefix}-{i}@example.com",
            "phone": f"+1415555{1000 + first + i:04d}",
            **attrs,
        }
        for i in range(n)
    ]


def far_future() -> Any:
    """A clock past every patience of the sweeper (leases, lost publishes, stuck intents and chunks)."""
    cfg = conf.get()
    longest = max(
        cfg.SEND_LEASE_SECONDS,
        cfg.SWEEP_QUEUED_AFTER_SECONDS,
        cfg.SWEEP_INTENT_AFTER_SECONDS,
        cfg.SWEEP_CHUNK_AFTER_SECONDS,
    )
    return timezone.now() + timedelta(seconds=longest + 5)


def in_flight(notification_ids: Sequence[Any]) -> int:
    return Delivery.objects.filter(notification_id__in=notification_ids, status__in=Delivery.IN_FLIGHT).count()


def settle(
    notification_ids: Sequence[Any],
    *,
    timeout: float = 30.0,
    sweep_first: bool = False,
    ahead: timedelta = timedelta(hours=2),
    idle: Callable[[], bool] | None = None,
) -> None:
    """Beat, accelerated: the dispatcher (its clock `ahead` of real time, so retries are due at
    once) until every delivery of these notifications is final.

    The sweeper runs with the clock moved past every lease and patience: first, if asked (call
    it so only when no live worker is in the middle of a send: after a crash, as the lease would
    once it had run out), and whenever only claimed rows remain while `idle()` says the worker
    holding them is doing nothing (a claim nobody works on).
    """
    if sweep_first:
        sweep(now=far_future())

    def done() -> bool:
        dispatch_due(now=timezone.now() + ahead)
        left = Delivery.objects.filter(notification_id__in=notification_ids, status__in=Delivery.IN_FLIGHT)
        if idle is not None and left.exists() and not left.exclude(status="sending").exists() and idle():
            sweep(now=far_future())
        return (
            not left.exists()
            and not Notification.objects.filter(
                pk__in=notification_ids, status__in=["accepted", "fanning_out"]
            ).exists()
        )

    def stuck() -> str:
        rows = Delivery.objects.filter(notification_id__in=notification_ids, status__in=Delivery.IN_FLIGHT)
        return (
            f"every delivery to be final; still in flight: {list(rows.values_list('status', 'attempts', 'error_code'))}"
        )

    wait_for(done, timeout=timeout, interval=0.2, message=LazyMessage(stuck))  # type: ignore[arg-type]
    sweep()  # completes the notifications


class LazyMessage:
    """A failure message computed only when it is shown (what was stuck when the wait timed out)."""

    def __init__(self, render: Callable[[], str]) -> None:
        self.render = render

    def __str__(self) -> str:
        return self.render()

    def __bool__(self) -> bool:
        return True


def sandbox_counts(client: SandboxClient) -> Counter[str]:
    """Messages each idempotency key (a delivery id) reached, over every provider."""
    counts: Counter[str] = Counter()
    for entry in client.counts()["providers"].values():
        counts.update(entry.get("idempotency_keys") or {})
    return counts


def assert_delivered_once(
    client: SandboxClient, notification_ids: Sequence[Any], *, max_interrupted: int | None = None
) -> dict[str, int]:
    """The invariant each fault test ends with; returns the deliveries counted by status.

    - nothing is stuck: no delivery in flight, every notification completed;
    - every delivery is settled with a reason: sent/delivered with exactly one accepted attempt,
      or failed/dead/bounced with an error code, or suppressed with a reason;
    - each sent delivery reached the sandbox at least once, and exactly once unless an attempt
      of it was interrupted (a `lost` attempt: the worker died mid-send; or a timeout: the answer
      was lost). An interrupted attempt may have reached the provider; its copy carries the same
      idempotency key, which a provider honouring it absorbs (the sandbox records both, so they
      show here). `max_interrupted` bounds how many deliveries may have such a copy;
    - deliveries that were never accepted did not reach the sandbox (only interrupted ones may);
    - the sandbox holds nothing else for these deliveries (counts match).
    """
    notifications = Notification.objects.filter(pk__in=notification_ids)
    assert {n.status for n in notifications} <= {"completed"}, {str(n.pk): n.status for n in notifications}
    deliveries = list(Delivery.objects.filter(notification_id__in=notification_ids))
    assert not [d for d in deliveries if d.status in Delivery.IN_FLIGHT], "deliveries still in flight"
    attempts = list(DeliveryAttempt.objects.filter(delivery__notification_id__in=notification_ids))
    accepted = Counter(str(a.delivery_id) for a in attempts if a.outcome == "accepted")
    interrupted = {
        str(a.delivery_id)
        for a in attempts
        if a.outcome == "lost" or (a.outcome == "transient" and a.error_code == "timeout")
    }
    counts = sandbox_counts(client)
    duplicated = []
    for d in deliveries:
        key = str(d.pk)
        if d.channel == "in_app":
            assert d.status in ("delivered", "suppressed"), (key, d.status)
            continue
        if d.status in ("sent", "delivered"):
            assert accepted[key] == 1, (key, d.status, accepted[key])
            assert counts[key] >= 1, (key, "accepted but never reached the sandbox")
            if counts[key] > 1:
                assert key in interrupted, (key, counts[key], "sent twice without an interrupted attempt")
                duplicated.append(key)
        elif d.status in ("failed", "dead", "bounced"):
            assert d.error_code, (key, d.status, "no reason")
            assert accepted[key] == 0, key
            assert counts[key] == 0 or key in interrupted, (key, d.status, counts[key])
        else:
            assert d.status == "suppressed" and d.suppression_reason, (key, d.status)
            assert counts[key] == 0, key
    if max_interrupted is not None:
        assert len(duplicated) <= max_interrupted, duplicated
    # Counts match: every message the sandbox holds carries the id of one of these deliveries.
    strays = set(counts) - {str(d.pk) for d in deliveries}
    assert not strays, f"messages without a delivery id of ours as idempotency key: {strays}"
    return dict(Counter(d.status for d in deliveries))


# --- Who consumes a queue --------------------------------------------------------------------------


def node_of(worker: Any, timeout: float = 2.0) -> str | None:
    """The Celery node name of a test-owned worker, once it answers remote control."""
    from workers.celery import app

    stats = app.control.inspect(timeout=timeout).stats() or {}
    names = [name for name, info in stats.items() if info.get("pid") == worker.proc.pid]
    return names[0] if names else None


def ready(worker: Any) -> Any:
    """Waits until this very worker answers (`start_worker` returns once any worker of this pytest
    process answers a ping, the session worker included)."""
    wait_for(lambda: node_of(worker, timeout=1.0), timeout=60, interval=0.2, message="the worker to answer")
    return worker


@contextlib.contextmanager
def consumers_paused(queue: str) -> Iterator[None]:
    """The session worker of this pytest process (if one runs) stops consuming `queue` meanwhile."""
    from workers.celery import app

    mine = f"test-{os.getpid()}-"
    names = [name for reply in app.control.ping(timeout=1.0) or [] for name in reply if name.startswith(mine)]
    if names:
        app.control.cancel_consumer(queue, destination=names, reply=True, timeout=5)
    try:
        yield
    finally:
        if names:
            app.control.add_consumer(queue, destination=names, reply=True, timeout=5)


@pytest.fixture
def own_queue(start_worker: Any) -> Iterator[Callable[[str], None]]:
    """`own_queue("notifications.bulk")` before `start_worker(...)`."""
    with contextlib.ExitStack() as stack:
        yield lambda queue: stack.enter_context(consumers_paused(queue))


# --- A Redis of the test's own ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """redis-server on 127.0.0.1:<free port>, no RDB. Without `persistent` a restart loses
    everything; with it an append-only file fsynced on every write in `directory` keeps what was
    queued across a `kill -9`."""

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # answering PING: its append-only file, if any, is loaded
            with contextlib.suppress(OSError, redis.RedisError):
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        """`kill -9`: nothing is flushed beyond what the append-only file already holds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def reset_pools() -> None:
    """Drops this process's broker connections; the next publish or control call opens new ones."""
    from kombu import pools

    from workers.celery import app

    pools.reset()  # kombu's process-wide connection and producer pools, keyed by broker URL
    app._pool = None  # type: ignore[attr-defined]
    with contextlib.suppress(AttributeError, KeyError):
        app.__dict__["amqp"]._producer_pool = None


@contextlib.contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Points this process's Celery app (publishing, remote control) at another broker.

    Celery reads CELERY_BROKER_URL from the environment before its configuration, so both change;
    the app's connection pools are dropped so the next publish connects to the new broker.
    """
    from workers.celery import app

    before_env, before_conf, before_setting = (
        os.environ.get("CELERY_BROKER_URL"),
        app.conf.broker_url,
        settings.CELERY_BROKER_URL,
    )
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.update(broker_url=url)
    settings.CELERY_BROKER_URL = url
    reset_pools()
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = before_env
        app.conf.update(broker_url=before_conf)
        settings.CELERY_BROKER_URL = before_setting
        reset_pools()
