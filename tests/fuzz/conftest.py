"""The world the fuzzer runs in: two tenants with objects of every kind, created through the API.

Tenant A's key makes every fuzzed request; tenant B is there to be leaked. B is seeded first, with its
integer ids moved far above A's (`B_ID_FLOOR`), so every id of B — a UUID or one of those numbers — is a
token that cannot appear in an answer to A by chance. The whole module runs inside one transaction that
is rolled back at its end (each request in a savepoint of its own), so nothing it writes outlives it and
no Celery task is published; the background steps that make deliveries, inbox items, webhook messages
and histories run inline, eagerly, while seeding.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from django.apps import apps as django_apps
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection, transaction
from django.test import TestCase
from rest_framework.test import APIClient

os.environ.setdefault("SIGNALBOX_TEST_TASKS", "1")
import apps.tasks.testing  # noqa: F401  (registers signalbox.testing.* task types in this process)

ROOT = Path(__file__).resolve().parents[2]
# Tenant B's integer ids start here, far above anything A creates, so one in an answer to A is B's.
B_ID_FLOOR = 1_900_000_000
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One node id per operation (`...::test_x[POST /api/v1/recipients/]`). Schemathesis 4 names each
    operation's item but, under pytest 9, leaves them all the bare function's node id; pytest-xdist
    schedules by node id, so it would run one operation of the 130 and report the rest as passed."""
    for item in items:
        if item.parent is None or "[" not in item.name or not item.nodeid.startswith("tests/fuzz/"):
            continue
        if item.nodeid != f"{item.parent.nodeid}::{item.name}":
            item._id = item.parent.id.child(item.name)  # pytest 9 keeps a node's address here


@dataclass
class World:
    """What the fuzzed requests use: A's credentials, and the values they may put in paths."""

    headers_a: dict[str, str]
    # Per path segment before a `{parameter}` (`recipients`, `devices`, ...): the values that name an
    # object there, A's and B's mixed, so a fuzzed path sometimes reaches a real object of A and
    # sometimes asks A's key for one of B's.
    path_values: dict[str, set[str]] = field(default_factory=dict)
    b_uuids: set[str] = field(default_factory=set)
    b_ints: set[int] = field(default_factory=set)

    def leaks(self, text: str) -> list[str]:
        """B's ids found in an answer to A."""
        found = [u for u in UUID_RE.findall(text) if u.lower() in self.b_uuids]
        found += [n for n in re.findall(r"(?<![0-9.])19[0-9]{8}(?![0-9])", text) if int(n) in self.b_ints]
        return found


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def _ok(response: Any, *codes: int) -> dict[str, Any]:
    assert response.status_code in codes, (response.status_code, response.content[:500])
    return response.json() if response.content else {}


def _seed_tenant(client: APIClient, tag: str, world: World) -> None:
    """Objects of every kind the API serves, made through the API (`tag` keeps B's names its own)."""

    def post(path: str, body: Any = None, *codes: int) -> dict[str, Any]:
        return _ok(client.post(path, body, format="json"), *(codes or (200, 201, 202)))

    def note(segment: str, *values: Any) -> None:
        world.path_values.setdefault(segment, set()).update(str(v) for v in values if v is not None)

    # The names the schema's own examples use (user-42, order_shipped, orders, ...) exist for A, so the
    # documented examples run against real objects; B's carry its tag.
    own = "" if tag == "a" else f"{tag}-"
    post("/api/v1/categories/", {"key": f"{own}orders", "name": "Orders"})
    post("/api/v1/categories/", {"key": f"{own}marketing", "critical": False})
    template = {
        "key": f"{own}order_shipped",
        "name": "Order shipped",
        "category": f"{own}orders",
        "variables": [{"name": "order_id", "example": "A-1"}, {"name": "carrier", "required": False}],
        "default_channels": ["email", "in_app"],
        "content": {
            "default": {
                "email": {"subject": "Order {{ order_id }} shipped", "text": "On its way."},
                "in_app": {"title": "Order {{ order_id }} shipped", "body": "Track it."},
                "sms": {"text": "Order {{ order_id }} shipped."},
            }
        },
    }
    post("/api/v1/templates/", template)
    _ok(client.patch(f"/api/v1/templates/{own}order_shipped/", {"name": "Order shipped!"}, format="json"), 200)
    note("templates", f"{own}order_shipped")
    note("versions", 1, 2)
    people = [f"{own}user-{n}" for n in (1, 2, 42, 43)]
    post(
        "/api/v1/recipients/bulk/",
        {"recipients": [{"external_id": p, "email": f"{p}@example.com", "phone": "+14155550100"} for p in people]},
    )
    note("recipients", *people)
    device = post(f"/api/v1/recipients/{own}user-42/devices/", {"platform": "ios", "token": f"tok-{tag}"})
    note("devices", device.get("id"))
    post(f"/api/v1/recipients/{own}user-42/webhook-secret/")
    _ok(
        client.put(
            f"/api/v1/recipients/{own}user-42/preferences/",
            {"preferences": [{"category": f"{own}marketing", "channels": {"email": False}}]},
            format="json",
        ),
        200,
    )
    post("/api/v1/topics/", {"key": f"{own}all", "name": "All"})
    post(f"/api/v1/topics/{own}all/subscribers/", {"recipients": people[:2]})
    note("topics", f"{own}all")
    notification = post(
        "/api/v1/notifications/",
        {"template": f"{own}order_shipped", "payload": {"order_id": "A-1"}, "recipients": people},
    )
    note("notifications", notification["id"])
    post(
        "/api/v1/flows/",
        {
            "key": f"{own}nudge",
            "template": f"{own}order_shipped",
            "steps": [
                {"id": "inbox", "type": "send", "channels": ["in_app"]},
                {"id": "check", "type": "branch", "if": {"channel": "in_app", "state": "read"}, "wait": "30m"},
                {"id": "email", "type": "send", "channels": ["email"]},
            ],
        },
    )
    note("flows", f"{own}nudge")
    flowing = post(
        "/api/v1/notifications/", {"flow": f"{own}nudge", "payload": {"order_id": "A-2"}, "recipients": people}
    )
    note("notifications", flowing["id"])
    endpoint = post("/api/v1/webhook-endpoints/", {"url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]})
    note("webhook-endpoints", endpoint["id"])
    rule = post(
        "/api/v1/rules/",
        {
            "name": "notify",
            "event_type": "order.*",
            "actions": [{"type": "notification", "template": f"{own}order_shipped", "recipients": [f'"{people[0]}"']}],
        },
    )
    note("rules", rule["id"])
    post("/api/v1/watchers/", {"subject": {"type": "order", "id": "O-1"}, "recipient": people[0]})
    event = post("/api/v1/events/", {"type": "order.paid", "subject": {"type": "order", "id": "O-1"}, "payload": {}})
    note("events", event["id"])
    task = post("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 1}})
    note("tasks", task["id"])
    schedule = post(
        "/api/v1/schedules/",
        {"name": "nightly", "target": {"task": "signalbox.testing.count", "input": {"steps": 1}}, "cron": "0 3 * * *"},
    )
    note("schedules", schedule["id"])
    config = post(
        "/api/v1/providers/configs/",
        {
            "name": f"{own}sendgrid",
            "provider": "sendgrid",
            "options": {"from_email": "a@example.com"},
            "secrets": {"api_key": "SG.x"},
        },
    )
    note("configs", config["id"])
    workflow = yaml.safe_load((ROOT / "docs" / "examples" / "order.yaml").read_text())
    post("/api/v1/workflows/", {**workflow, "key": f"{own}order"})
    post(f"/api/v1/workflows/{own}order/instances/", {"subject_id": "O-1", "data": {"total": 5}})
    post(f"/api/v1/workflows/{own}order/instances/O-1/transitions/", {"transition": "submit"})
    note("workflows", f"{own}order")
    note("instances", "O-1")
    key = post("/api/v1/api-keys/", {"name": f"{own}spare", "scopes": ["read"]})
    note("api-keys", key.get("prefix"))


def _collect_ids(world: World) -> None:
    """Every row the API shows that belongs to B: its UUIDs and its (floor-lifted) integer ids, and the
    values that name B's objects in paths (deliveries, inbox items, messages ... made by the pipeline)."""
    from apps.tenancy.models import Tenant

    b = Tenant.objects.get(slug="fuzz-b")
    world.b_uuids.add(str(b.pk))
    for model in django_apps.get_models():
        names = {f.name for f in model._meta.get_fields()}
        if "tenant" not in names:
            continue
        for pk in model._default_manager.filter(tenant=b).values_list("pk", flat=True):
            if isinstance(pk, uuid.UUID):
                world.b_uuids.add(str(pk))
            elif isinstance(pk, int) and pk >= B_ID_FLOOR:
                world.b_ints.add(pk)


def _pipeline_objects(world: World) -> None:
    """Path values for what the pipeline made (both tenants): deliveries, inbox items, messages, ..."""
    from apps.events.models import WebhookMessage
    from apps.notifications.models import Delivery, Suppression
    from apps.tasks.models import TaskExecution
    from apps.workflows.models import TransitionIntent

    def note(segment: str, values: Any) -> None:
        world.path_values.setdefault(segment, set()).update(str(v) for v in values)

    note("deliveries", Delivery.objects.values_list("pk", flat=True)[:20])
    note("inbox", Delivery.objects.filter(channel="in_app").values_list("pk", flat=True)[:20])
    note("webhook-messages", WebhookMessage.objects.values_list("pk", flat=True)[:20])
    note("tasks", TaskExecution.objects.values_list("pk", flat=True)[:20])
    note("transition-intents", TransitionIntent.objects.values_list("pk", flat=True)[:20])
    note("suppressions", Suppression.objects.values_list("pk", flat=True)[:20])


def _sequences() -> list[tuple[str, int, bool]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT schemaname || '.' || sequencename FROM pg_sequences WHERE schemaname = 'public'")
        names = [row[0] for row in cursor.fetchall()]
        saved = []
        for name in names:
            cursor.execute(f"SELECT last_value, is_called FROM {name}")  # noqa: S608 (names from pg_sequences)
            last_value, is_called = cursor.fetchone()
            saved.append((name, last_value, is_called))
    return saved


def _set_sequences(values: list[tuple[str, int, bool]]) -> None:
    with connection.cursor() as cursor:
        for name, value, is_called in values:
            cursor.execute("SELECT setval(%s, %s, %s)", [name, value, is_called])


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _run_inline(name: str, args: Any = None, kwargs: Any = None, headers: Any = None, **options: Any) -> Any:
    """`send_task` while seeding: tracked tasks run here and now, like the eager ones, and nothing
    reaches the broker."""
    from workers.celery import app as celery_app

    return celery_app.tasks[name].apply(args=args, kwargs=kwargs, headers=headers)


@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    from apps.tenancy.services import api_key_create, tenant_create
    from workers.celery import app as celery_app

    eager = celery_app.conf.task_always_eager
    with django_db_blocker.unblock():
        saved = _sequences()
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            celery_app.conf.task_always_eager = True
            # Eager tasks drop "old" connections before they run, which inside this transaction means
            # closing it: they share the fixture's connection instead.
            with (
                mock.patch("django.db.close_old_connections", return_value=None),
                mock.patch("workers.signals.close_old_connections", return_value=None),
                mock.patch.object(celery_app, "send_task", _run_inline),
                TestCase.captureOnCommitCallbacks(execute=True),
            ):
                tenant_b = tenant_create(slug="fuzz-b", name="Fuzz B")
                tenant_a = tenant_create(slug="fuzz-a", name="Fuzz A")
                _, key_b = api_key_create(tenant=tenant_b, name="fuzz-b")
                world = World(headers_a={})
                before_b = _sequences()
                _set_sequences([(name, B_ID_FLOOR, False) for name, _, _ in before_b])
                _seed_tenant(_client(key_b), "b", world)
                _set_sequences(before_b)
                _, key_a = api_key_create(tenant=tenant_a, name="fuzz-a")
                _seed_tenant(_client(key_a), "a", world)
            celery_app.conf.task_always_eager = eager
            _collect_ids(world)
            _pipeline_objects(world)
            world.headers_a = {"Authorization": f"Bearer {key_a}"}
            # A WSGI request closes a connection it finds inside a transaction. Django's test client
            # (the seeding above) avoids that the same way, reconnecting the handlers after each request.
            request_started.disconnect(close_old_connections)
            request_finished.disconnect(close_old_connections)
            # Thousands of requests: an access-log line and a 4xx warning each would be most of the time.
            with _quiet("signalbox.access", "django.request"):
                yield world
        finally:
            celery_app.conf.task_always_eager = eager
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
            _set_sequences(saved)
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
