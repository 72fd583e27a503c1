"""Task names are permanent: queued messages, beat rows and tenants' schedules refer to them by name."""

from __future__ import annotations

import ast
from pathlib import Path

from apps.core.periodic import periodic_jobs
from apps.tasks.registry import task_types
from workers.celery import app

PINNED_TASK_TYPES = {
    "signalbox.exports.deliveries_csv": "tasks",
    "signalbox.notifications.resend_deliveries": "tasks",
    "signalbox.notifications.import_recipients": "tasks",  # apps/notifications/tracked.py
    "signalbox.maintenance.retention_purge": "maintenance",  # apps/tasks/builtin/retention.py
}
PINNED_CELERY_TASKS = {
    "signalbox.tasks.sweep_stale": "maintenance",
    "signalbox.tasks.purge_expired": "maintenance",
    "signalbox.tasks.run_schedule": "maintenance",
    "signalbox.tasks.run_django_task": "tasks",
}


def test_built_in_task_types_keep_their_names_and_queues():
    registered = {t.name: t.queue for t in task_types() if not t.name.startswith("signalbox.testing.")}

    assert registered == PINNED_TASK_TYPES


def test_the_apps_celery_tasks_keep_their_names_and_queues():
    app.loader.import_default_modules()

    for name, queue in {**PINNED_CELERY_TASKS, **PINNED_TASK_TYPES}.items():
        assert name in app.tasks, name
        assert app.tasks[name].queue == queue  # type: ignore[attr-defined]


def test_the_upkeep_jobs_are_on_the_beat_schedule():
    jobs = {job.task: job for job in periodic_jobs()}

    assert jobs["signalbox.tasks.sweep_stale"].every_seconds == 60
    assert jobs["signalbox.tasks.purge_expired"].queue == "maintenance"


def test_tracked_tasks_keep_no_celery_result_rows():
    # TaskExecution is the one record clients read; django-celery-results would only duplicate it.
    for name in PINNED_TASK_TYPES:
        assert app.tasks[name].ignore_result is True


def _published_names() -> set[tuple[str, str]]:
    """(module, name) of every task a service publishes by name (`publish`/`publish_on_commit("…")`)."""
    root = Path(__file__).resolve().parents[2]
    found: set[tuple[str, str]] = set()
    for path in (root / "apps").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("publish", "publish_on_commit")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add((str(path.relative_to(root)), node.args[0].value))
    return found


def test_every_task_published_by_name_exists():
    # A service names the task it publishes instead of importing it: a typo would strand the message.
    app.loader.import_default_modules()
    published = _published_names()

    assert {name for _, name in published} >= {"signalbox.notifications.send_batch", "signalbox.events.process"}
    assert [(module, name) for module, name in sorted(published) if name not in app.tasks] == []
