"""Test-only task types, registered only when `SIGNALBOX_TEST_TASKS=1` (the test suite sets it).

The worker is a separate process, so these cannot live in tests/: apps/tasks/tasks.py imports
this module when the setting is on, in the worker and the web process alike. Never enable it in
production: these tasks exist to sleep, fail and misbehave on purpose.
"""

from __future__ import annotations

import os
import time
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from django_tasks import TaskContext as DjangoTaskContext
from django_tasks import task
from rest_framework import serializers

from apps.tasks.registry import tracked_task
from apps.tasks.runtime import TaskContext, TaskError


class CountInput(serializers.Serializer[Any]):
    steps = serializers.IntegerField(min_value=1, max_value=10_000, help_text="How many steps to count.")
    delay = serializers.FloatField(min_value=0, max_value=5, default=0.0, help_text="Seconds per step.")
    note = serializers.CharField(max_length=20, required=False)


@tracked_task(name="signalbox.testing.count", input=CountInput, max_retries=2, retry_backoff=0.1)
def count(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
    """Counts to `steps`, reporting progress and honouring cancellation; resumes where a lost attempt stopped."""
    steps = data["steps"]
    for step in range(ctx.current, steps):
        ctx.check_cancelled()
        time.sleep(data["delay"])
        ctx.progress(step + 1, steps, f"step {step + 1} of {steps}")
    return {"counted": steps, "attempt": ctx.attempt, "pid": os.getpid(), "note": data.get("note", "")}


class FailInput(serializers.Serializer[Any]):
    code = serializers.CharField(default="export_refused")
    message = serializers.CharField(default="Nothing to export.")


@tracked_task(name="signalbox.testing.fail", input=FailInput, max_retries=3, retry_backoff=0.1)
def fail(ctx: TaskContext, data: dict[str, Any]) -> None:
    """Ends failed with the given code at once (a TaskError is never retried)."""
    raise TaskError(data["code"], data["message"])


class FlakyInput(serializers.Serializer[Any]):
    fail_times = serializers.IntegerField(min_value=0)


@tracked_task(name="signalbox.testing.flaky", input=FlakyInput, max_retries=2, retry_backoff=0.1)
def flaky(ctx: TaskContext, data: dict[str, Any]) -> dict[str, int]:
    """Raises an unexpected error on its first `fail_times` attempts."""
    if ctx.attempt <= data["fail_times"]:
        raise RuntimeError("database password is hunter2")  # must never reach a tenant
    return {"attempt": ctx.attempt}


class FragileInput(serializers.Serializer[Any]):
    blocker = serializers.CharField(help_text="A file path; the task fails while it exists.")


@tracked_task(name="signalbox.testing.fragile", input=FragileInput, max_retries=2, retry_backoff=0.1)
def fragile(ctx: TaskContext, data: dict[str, Any]) -> dict[str, int]:
    """Fails (and is retried) while its blocker file exists: a dependency that is down until fixed."""
    if os.path.exists(data["blocker"]):
        raise ConnectionError("the dependency is down")
    return {"attempt": ctx.attempt}


@tracked_task(name="signalbox.testing.slow", soft_time_limit=1, time_limit=4, max_retries=2)
def slow(ctx: TaskContext, data: dict[str, Any]) -> None:
    """Runs past its one-second soft time limit."""
    time.sleep(10)


@tracked_task(name="signalbox.testing.hung", soft_time_limit=1, time_limit=2, max_retries=2)
def hung(ctx: TaskContext, data: dict[str, Any]) -> None:
    """Ignores its soft time limit, so the hard limit kills the process running it."""
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        time.sleep(10)


@tracked_task(name="signalbox.testing.stubborn", terminable=True, max_retries=0)
def stubborn(ctx: TaskContext, data: dict[str, Any]) -> None:
    """Sleeps without ever checking for cancellation: only `terminate` stops it."""
    ctx.progress(0, 1, "sleeping")
    ctx.flush()
    time.sleep(60)


class BigInput(serializers.Serializer[Any]):
    kilobytes = serializers.IntegerField(min_value=1, max_value=4096)


@tracked_task(name="signalbox.testing.big_result", input=BigInput, max_retries=0)
def big_result(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
    """Returns a result of about `kilobytes` KB."""
    return {"blob": "x" * (data["kilobytes"] * 1024)}


@tracked_task(name="signalbox.testing.report_file", max_retries=0)
def report_file(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
    """Writes a small CSV download."""
    ctx.save_file("report.csv", b"a,b\n1,2\n", "text/csv")
    return {"rows": 1}


class SpinInput(serializers.Serializer[Any]):
    calls = serializers.IntegerField(min_value=1, max_value=10_000_000)


@tracked_task(name="signalbox.testing.tight_loop", input=SpinInput, max_retries=0)
def tight_loop(ctx: TaskContext, data: dict[str, Any]) -> dict[str, int]:
    """Reports progress (and checks cancellation) on every iteration of a tight loop."""
    calls = data["calls"]
    for i in range(calls):
        ctx.progress(i + 1, calls)
        ctx.check_cancelled()
    return {"calls": calls}


# --- Django Tasks (`@task`) functions, run through the Signalbox backend ---------------------


@task()
def add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def add_on_second_attempt(context: DjangoTaskContext, a: int, b: int) -> dict[str, int]:
    if context.attempt < 2:
        raise ConnectionError("the first attempt always fails")
    return {"sum": a + b, "attempt": context.attempt}


@task()
def refuse() -> None:
    raise TaskError("refused", "This task refuses to run.")
