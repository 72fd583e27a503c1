"""The tasks API without a worker: validation before anything is queued, task types, isolation, lists."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.tasks.models import TaskExecution
from apps.tasks.services import task_start
from tests.conftest import client_for
from tests.tasks.conftest import start_task

pytestmark = pytest.mark.django_db


def test_invalid_input_is_a_400_with_fields_and_nothing_is_queued(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as published:
        response = api.post(
            "/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 0, "delay": "x"}}, format="json"
        )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert set(body["fields"]["input"]) == {"steps", "delay"}
    assert TaskExecution.objects.count() == 0
    assert published == []


def test_unknown_fields_types_and_names_are_refused(api):
    unknown = api.post("/api/v1/tasks/", {"name": "signalbox.nope", "input": {}}, format="json")
    assert unknown.status_code == 422  # well formed; no task has that name
    assert unknown.json()["code"] == "unknown_task"
    assert "name" in unknown.json()["fields"]

    not_an_object = api.post("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": [1]}, format="json")
    assert not_an_object.json()["fields"] == {"input": ["Expected an object."]}

    missing_name = api.post("/api/v1/tasks/", {"input": {}}, format="json")
    assert missing_name.json()["fields"] == {"name": ["This field is required."]}
    assert TaskExecution.objects.count() == 0


def test_task_types_list_names_and_input_schemas(api):
    response = api.get("/api/v1/task-types/")

    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()}
    assert {"signalbox.exports.deliveries_csv", "signalbox.notifications.resend_deliveries"} <= set(types)
    count = types["signalbox.testing.count"]
    assert count["queue"] == "tasks"
    assert count["max_retries"] == 2
    assert count["input_schema"] == {
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "How many steps to count."},
            "delay": {"type": "number", "minimum": 0, "maximum": 5, "description": "Seconds per step.", "default": 0.0},
            "note": {"type": "string", "maxLength": 20},
        },
        "additionalProperties": False,
        "required": ["steps"],
    }
    export = types["signalbox.exports.deliveries_csv"]["input_schema"]["properties"]
    assert "failed" in export["status"]["items"]["enum"]
    assert export["created_after"] == {
        "type": "string",
        "format": "date-time",
        "description": "Created at or after (ISO 8601).",
    }
    resend = types["signalbox.notifications.resend_deliveries"]["input_schema"]["properties"]
    assert resend["status"]["items"]["enum"] == ["failed", "dead"]


def test_another_tenants_task_is_a_404_everywhere(api, other_api, tenant):
    execution = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})
    url = f"/api/v1/tasks/{execution.id}/"

    assert other_api.get(url).status_code == 404
    assert other_api.post(f"{url}cancel/").status_code == 404
    assert other_api.post(f"{url}retry/").status_code == 404
    assert other_api.get(f"{url}download/").status_code == 404
    assert other_api.get("/api/v1/tasks/").json()["results"] == []
    assert api.get(url).status_code == 200
    assert api.get("/api/v1/tasks/not-a-uuid/").status_code == 404


def test_an_idempotency_key_starts_the_task_once(api):
    body = {"name": "signalbox.testing.count", "input": {"steps": 3}}

    first = api.post("/api/v1/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="export-2024-06")
    again = api.post("/api/v1/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="export-2024-06")
    other = api.post(
        "/api/v1/tasks/", {**body, "input": {"steps": 4}}, format="json", HTTP_IDEMPOTENCY_KEY="export-2024-06"
    )

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert again["Location"] == first["Location"]
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert TaskExecution.objects.count() == 1


def test_the_service_honours_an_idempotency_key_too(tenant):
    first = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 2}, idempotency_key="k1")
    again = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 2}, idempotency_key="k1")

    assert again.pk == first.pk


def test_the_list_filters_by_status_name_and_time(api, tenant):
    old = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})
    TaskExecution.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2), status="failed")
    dead = task_start(tenant=tenant, name="signalbox.testing.flaky", input={"fail_times": 9})
    TaskExecution.objects.filter(pk=dead.pk).update(status="dead")
    queued = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})

    def ids(query: str) -> list[str]:
        response = api.get(f"/api/v1/tasks/?{query}")
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids("") == [str(queued.pk), str(dead.pk), str(old.pk)]
    assert ids("status=dead") == [str(dead.pk)]
    assert ids("status=failed,dead") == [str(dead.pk), str(old.pk)]
    assert ids("name=signalbox.testing.count") == [str(queued.pk), str(old.pk)]
    yesterday = (timezone.now() - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"created_after={yesterday}") == [str(queued.pk), str(dead.pk)]
    assert ids(f"created_before={yesterday}") == [str(old.pk)]
    assert "result" not in api.get("/api/v1/tasks/").json()["results"][0]
    bad = api.get("/api/v1/tasks/?status=exploded")
    assert bad.status_code == 400 and "status" in bad.json()["fields"]


def test_the_poll_endpoint_is_one_query(api, tenant, django_assert_max_num_queries):
    execution = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})
    api.get(f"/api/v1/tasks/{execution.id}/")  # warm the key's last_used_at write

    # Authentication (the key and its tenant) is one query; the poll itself is one more.
    with django_assert_max_num_queries(2):
        assert api.get(f"/api/v1/tasks/{execution.id}/").status_code == 200


def test_polling_answers_304_while_nothing_changed_and_says_when_to_poll_again(api):
    later = timezone.now() + timedelta(hours=1)
    started = start_task(api, "signalbox.testing.count", {"steps": 1}, scheduled_at=later.isoformat())
    url = f"/api/v1/tasks/{started['id']}/"

    first = api.get(url)
    assert first.status_code == 200
    assert first["Retry-After"] == "2"
    assert first["Cache-Control"] == "no-cache"
    unchanged = api.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert unchanged.status_code == 304
    assert unchanged["ETag"] == first["ETag"]
    assert unchanged.content == b""

    api.post(f"{url}cancel/")
    changed = api.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200
    assert changed["ETag"] != first["ETag"]
    assert changed.json()["status"] == "cancelled"
    assert "Retry-After" not in changed


def test_starting_needs_the_tasks_write_scope(tenant):
    reader = client_for(tenant, ["read"])
    refused = reader.post("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 1}}, format="json")
    assert refused.status_code == 403
    assert refused.json()["code"] == "missing_scope"

    writer = client_for(tenant, ["tasks:write"])
    started = start_task(writer, "signalbox.testing.count", {"steps": 1})
    assert reader.get(started["url"]).status_code == 200


def test_admin_shows_executions_with_their_traceback_and_replays_dead_ones(admin_client, tenant):
    dead = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})
    TaskExecution.objects.filter(pk=dead.pk).update(
        status="dead", error_code="internal_error", error_traceback="Traceback: KeyError('boom')"
    )

    assert admin_client.get("/admin/tasks/taskexecution/?status__exact=dead").status_code == 200
    page = admin_client.get(f"/admin/tasks/taskexecution/{dead.pk}/change/")
    assert page.status_code == 200
    assert "KeyError(&#x27;boom&#x27;)" in page.content.decode()
    assert admin_client.get("/admin/tasks/schedule/").status_code == 200

    admin_client.post("/admin/tasks/taskexecution/", {"action": "retry_selected", "_selected_action": [str(dead.pk)]})

    retry = TaskExecution.objects.get(retry_of=dead)
    assert (retry.status, retry.actor_type) == ("queued", "staff")


def test_another_apps_intent_is_polled_like_any_task(api, tenant):
    from apps.tasks.services import (
        execution_create_for_intent,
        execution_mark_failed,
        execution_mark_running,
        execution_mark_succeeded,
        execution_progress,
    )

    execution = execution_create_for_intent(
        tenant=tenant, name="signalbox.workflows.transition", input={"transition": "approve"}, queue="transitions"
    )
    url = f"/api/v1/tasks/{execution.id}/"
    assert api.get(url).json()["status"] == "queued"

    assert execution_mark_running(execution_id=execution.id)
    assert execution_progress(execution_id=execution.id, current=1, total=2, message="effects")
    assert api.get(url).json()["progress"] == {"current": 1, "total": 2, "percent": 50.0, "message": "effects"}
    assert execution_mark_succeeded(execution_id=execution.id, result={"state": "approved"})
    assert not execution_mark_failed(execution_id=execution.id, code="late", message="Too late.")  # already final

    done = api.get(url).json()
    assert (done["kind"], done["status"], done["result"]) == ("intent", "succeeded", {"state": "approved"})
    assert api.post(f"{url}retry/").json()["code"] == "not_retryable"


def test_a_cancelled_intent_is_not_run_by_its_worker(api, tenant):
    from apps.tasks.services import execution_create_for_intent, execution_mark_running

    execution = execution_create_for_intent(tenant=tenant, name="signalbox.workflows.transition")

    assert api.post(f"/api/v1/tasks/{execution.id}/cancel/").json()["status"] == "cancelled"
    assert execution_mark_running(execution_id=execution.id) is False
