"""A client's view of tracked tasks, through the real worker: start, poll, fail, retry, cancel, download."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.observability.models import AuditEntry
from apps.tasks.models import TaskExecution
from apps.tenancy.services import api_key_create
from tests.tasks.conftest import poll_finished, poll_until, start_task

pytestmark = pytest.mark.worker


def test_a_started_task_reports_progress_and_succeeds(api, worker):
    started = start_task(api, "signalbox.testing.count", {"steps": 20, "delay": 0.1, "note": "hello"})
    assert started["status"] == "queued"
    assert started["input"] == {"steps": 20, "delay": 0.1, "note": "hello"}

    midway = poll_until(api, started["id"], lambda body: 0 < body["progress"]["current"] < 20)
    assert midway["status"] == "running"
    assert midway["progress"]["total"] == 20
    assert 0 < midway["progress"]["percent"] < 100

    done = poll_finished(api, started["id"])
    assert done["status"] == "succeeded"
    assert done["progress"] == {"current": 20, "total": 20, "percent": 100.0, "message": "step 20 of 20"}
    assert done["result"]["counted"] == 20
    assert done["attempts"] == 1
    assert done["error"] is None
    assert done["started_at"] and done["finished_at"] and done["expires_at"]
    assert done["actor"]["type"] == "api_key"
    not_retryable = api.post(f"/api/v1/tasks/{started['id']}/retry/")
    assert not_retryable.status_code == 409
    assert not_retryable.json()["code"] == "not_retryable"


def test_a_task_error_fails_cleanly_and_only_staff_see_the_traceback(api, tenant, worker):
    started = start_task(api, "signalbox.testing.fail", {"code": "nothing_to_export", "message": "No rows match."})

    done = poll_finished(api, started["id"])

    assert done["status"] == "failed"
    assert done["error"] == {"code": "nothing_to_export", "message": "No rows match."}
    assert done["attempts"] == 1  # a TaskError is the task's answer, not trouble: never retried
    assert "Traceback" not in str(done)
    _, clear = api_key_create(tenant=None, name="ops", platform=True)
    staff = APIClient()
    staff.credentials(HTTP_AUTHORIZATION=f"Bearer {clear}", HTTP_X_TENANT_ID=tenant.slug)
    error = staff.get(started["url"]).json()["error"]
    assert error["code"] == "nothing_to_export"
    assert "TaskError: No rows match." in error["traceback"]


def test_an_unexpected_error_is_retried_with_backoff_and_its_details_stay_internal(api, worker):
    started = start_task(api, "signalbox.testing.flaky", {"fail_times": 1})

    done = poll_finished(api, started["id"])

    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    assert done["result"] == {"attempt": 2}
    row = TaskExecution.objects.get(pk=started["id"])
    assert row.error_traceback == ""  # cleared by the success


def test_exhausted_retries_go_dead_are_listed_and_can_be_replayed(api, worker, tmp_path):
    blocker = tmp_path / "dependency-down"
    blocker.touch()
    started = start_task(api, "signalbox.testing.fragile", {"blocker": str(blocker)})

    dead = poll_finished(api, started["id"])
    assert dead["status"] == "dead"
    assert dead["attempts"] == 3 == dead["max_attempts"]
    assert dead["error"]["code"] == "internal_error"
    assert "ConnectionError" not in str(dead) and "Traceback" not in str(dead)
    row = TaskExecution.objects.get(pk=started["id"])
    assert "ConnectionError: the dependency is down" in row.error_traceback  # kept for staff, in admin

    letters = api.get("/api/v1/tasks/?status=dead").json()["results"]
    assert [letter["id"] for letter in letters] == [started["id"]]

    blocker.unlink()  # the dependency is back
    replay = api.post(f"/api/v1/tasks/{started['id']}/retry/")
    assert replay.status_code == 202
    assert replay["Location"] == f"/api/v1/tasks/{replay.json()['id']}/"
    assert replay.json()["retry_of"] == started["id"]
    assert poll_finished(api, replay.json()["id"])["status"] == "succeeded"

    original = api.get(f"/api/v1/tasks/{started['id']}/").json()
    assert original["status"] == "dead" and original["retried_as"] == replay.json()["id"]
    again = api.post(f"/api/v1/tasks/{started['id']}/retry/")
    assert again.status_code == 409 and again.json()["code"] == "already_retried"
    assert AuditEntry.objects.filter(action="task.retried", target_id=started["id"]).count() == 1


def test_the_soft_time_limit_ends_the_task_with_a_timeout_error(api, worker):
    started = start_task(api, "signalbox.testing.slow")

    done = poll_finished(api, started["id"], timeout=30)

    assert done["status"] == "failed"
    assert done["error"]["code"] == "timeout"
    assert done["attempts"] == 1


def test_cancelling_a_queued_task_means_it_never_runs(api, worker):
    soon = timezone.now() + timedelta(seconds=1)
    started = start_task(api, "signalbox.testing.count", {"steps": 1}, scheduled_at=soon.isoformat())
    assert started["next_attempt_at"] is not None

    response = api.post(f"/api/v1/tasks/{started['id']}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"]["code"] == "cancelled"
    time.sleep(2)  # past the time its message was due on the worker
    row = TaskExecution.objects.get(pk=started["id"])
    assert (row.status, row.attempts, row.started_at) == ("cancelled", 0, None)
    assert AuditEntry.objects.filter(action="task.cancelled", target_id=started["id"]).exists()


def test_cancelling_a_running_task_stops_it_at_its_next_check(api, worker):
    started = start_task(api, "signalbox.testing.count", {"steps": 200, "delay": 0.05})
    poll_until(api, started["id"], lambda body: body["progress"]["current"] > 0)

    response = api.post(f"/api/v1/tasks/{started['id']}/cancel/")

    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    done = poll_finished(api, started["id"])
    assert done["status"] == "cancelled"
    assert done["progress"]["current"] < 200
    assert api.post(f"/api/v1/tasks/{started['id']}/cancel/").json()["code"] == "task_finished"


def test_terminate_kills_only_a_task_that_declares_it_safe(api, worker):
    cooperative = start_task(api, "signalbox.testing.count", {"steps": 100, "delay": 0.05})
    refused = api.post(f"/api/v1/tasks/{cooperative['id']}/cancel/", {"terminate": True}, format="json")
    assert refused.status_code == 400
    assert refused.json()["code"] == "terminate_not_supported"
    api.post(f"/api/v1/tasks/{cooperative['id']}/cancel/")

    started = start_task(api, "signalbox.testing.stubborn")
    poll_until(api, started["id"], lambda body: body["status"] == "running")

    response = api.post(f"/api/v1/tasks/{started['id']}/cancel/", {"terminate": True}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert poll_finished(api, cooperative["id"])["status"] == "cancelled"


def test_a_large_result_becomes_a_download(api, worker):
    started = start_task(api, "signalbox.testing.big_result", {"kilobytes": 300})

    done = poll_finished(api, started["id"])

    assert done["status"] == "succeeded"
    assert done["result"] is None
    assert done["download_url"] == f"/api/v1/tasks/{started['id']}/download/"
    download = api.get(done["download_url"], HTTP_ACCEPT="application/json")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/json"
    assert len(b"".join(download.streaming_content)) > 300 * 1024


def test_a_task_file_is_downloadable_by_its_tenant_only(api, other_api, worker):
    started = start_task(api, "signalbox.testing.report_file")
    done = poll_finished(api, started["id"])

    download = api.get(done["download_url"], HTTP_ACCEPT="text/csv")

    assert download.status_code == 200
    assert download["Content-Type"] == "text/csv"
    assert 'filename="report.csv"' in download["Content-Disposition"]
    assert b"".join(download.streaming_content) == b"a,b\n1,2\n"
    assert other_api.get(done["download_url"]).status_code == 404
    no_file = start_task(api, "signalbox.testing.count", {"steps": 1})
    poll_finished(api, no_file["id"])
    assert api.get(f"/api/v1/tasks/{no_file['id']}/download/").json()["code"] == "no_download"


def test_progress_in_a_tight_loop_writes_only_a_few_times(api, worker):
    started = start_task(api, "signalbox.testing.tight_loop", {"calls": 200_000})

    done = poll_finished(api, started["id"])

    assert done["status"] == "succeeded"
    # 200,000 progress() calls: one write per whole percent at most, plus claim and finish.
    assert TaskExecution.objects.get(pk=started["id"]).version <= 105
