"""The real worker: tasks run on their queues, reuse database connections, inherit the request context,
and nothing is published for a rolled-back transaction."""

from __future__ import annotations

import pytest
from django.db import transaction

from apps.core import context
from apps.core.publish import publish_on_commit
from apps.core.tasks import diagnose

pytestmark = pytest.mark.worker


def test_worker_reuses_its_database_connection_between_tasks(start_worker):
    start_worker(queues="maintenance", concurrency=1)
    sessions_by_process: dict[int, set[int]] = {}
    for _ in range(8):
        seen = diagnose.apply_async().get(timeout=30)
        sessions_by_process.setdefault(seen["pid"], set()).add(seen["db_session"])
    # Another session worker may share the queue; each process must keep one database session.
    assert all(len(sessions) == 1 for sessions in sessions_by_process.values()), sessions_by_process


def test_task_inherits_the_request_id_and_tenant(worker):
    with context.bound(request_id="req-42", tenant="t-1"):
        result = diagnose.apply_async().get(timeout=30)
    assert result["context"]["request_id"] == "req-42"
    assert result["context"]["tenant"] == "t-1"


def test_publish_waits_for_commit_and_a_rollback_publishes_nothing(worker, monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(diagnose, "apply_async", lambda args=(), **kw: sent.append(args))

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        publish_on_commit(diagnose)
        raise Rollback
    assert sent == []

    with transaction.atomic():
        publish_on_commit(diagnose, "x")
        assert sent == []
    assert sent == [("x",)]
