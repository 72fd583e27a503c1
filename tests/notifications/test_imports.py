"""Importing recipients from a file: POST /api/v1/recipients/imports/ → a tracked task run by the real worker."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.notifications.models import Recipient, Topic, TopicMembership
from apps.notifications.services import imports
from apps.tasks.models import TaskExecution
from tests.conftest import wait_for

URL = "/api/v1/recipients/imports/"
FINAL = {"succeeded", "failed", "cancelled", "dead"}


def ndjson(*items: Any) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def start_import(api: Any, body: bytes, content_type: str = "application/x-ndjson", **headers: Any) -> Any:
    return api.post(URL, data=body, content_type=content_type, **headers)


def finished(api: Any, response: Any, timeout: float = 60) -> dict[str, Any]:
    assert response.status_code == 202, response.content[:500]
    location = response["Location"]
    assert location == f"/api/v1/tasks/{response.json()['id']}/"

    def final() -> dict[str, Any] | None:
        body = api.get(location).json()
        return body if body["status"] in FINAL else None

    result: dict[str, Any] = wait_for(final, timeout=timeout, interval=0.1, message=location)
    return result


def error_report(api: Any, done: dict[str, Any]) -> list[dict[str, str]]:
    download = api.get(done["download_url"], HTTP_ACCEPT="text/csv")
    assert download.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))


def uploads_of(tenant: Any) -> list[str]:
    folder = f"{imports.UPLOAD_PREFIX}/{tenant.pk}"
    return default_storage.listdir(folder)[1] if default_storage.exists(folder) else []


# --- Through the API and the worker -------------------------------------------------------------


def test_an_ndjson_import_creates_and_updates_recipients(api, tenant, make_recipients, worker):
    make_recipients(1, prefix="old", name="Old name", locale="de")
    body = ndjson(
        {"external_id": "old-0", "name": "New name"},
        {"external_id": "new-1", "email": "new-1@example.com", "phone": "+1 415 555 0100", "data": {"plan": "pro"}},
        {"external_id": "new-2", "unsubscribed": True},
    )

    done = finished(api, start_import(api, body))

    assert done["status"] == "succeeded", done
    assert done["result"] | {"imported": 3, "created": 2, "updated": 1, "invalid": 0} == done["result"]
    old = Recipient.objects.get(tenant=tenant, external_id="old-0")
    assert (old.name, old.locale, old.email) == ("New name", "de", "old-0@example.com")  # left-out fields kept
    new = Recipient.objects.get(tenant=tenant, external_id="new-1")
    assert (new.phone, new.data) == ("+14155550100", {"plan": "pro"})  # normalized like the API does
    assert Recipient.objects.get(tenant=tenant, external_id="new-2").unsubscribed_at is not None
    assert uploads_of(tenant) == []  # the upload is gone once imported


def test_a_csv_import_reads_typed_cells_and_leaves_empty_cells_alone(api, tenant, make_recipients, worker):
    make_recipients(1, prefix="kept", name="Kept")
    body = (
        b"external_id,name,email,data,unsubscribed\n"
        b'kept-0,,kept@example.org,"{""vip"": true}",false\n'
        b"fresh,Fresh,fresh@example.com,,yes\n"
    )

    done = finished(api, start_import(api, body, "text/csv; charset=utf-8"))

    assert done["status"] == "succeeded", done
    assert (done["result"]["created"], done["result"]["updated"]) == (1, 1)
    kept = Recipient.objects.get(tenant=tenant, external_id="kept-0")
    assert (kept.name, kept.email, kept.data, kept.unsubscribed_at) == ("Kept", "kept@example.org", {"vip": True}, None)
    assert Recipient.objects.get(tenant=tenant, external_id="fresh").unsubscribed_at is not None


def test_invalid_rows_are_reported_by_row_and_field_and_the_valid_rows_still_land(api, tenant, worker):
    body = b"".join(
        [
            ndjson({"external_id": "ok-1", "email": "ok-1@example.com"}),
            ndjson({"external_id": "bad-email", "email": "not an address"}),
            b"{not json\n",
            b"\n",  # blank lines are skipped, but still numbered
            ndjson({"email": "no-id@example.com", "colour": "red"}),
            ndjson({"external_id": "ok-1", "name": "Again"}),
            ndjson({"external_id": "ok-2", "topic": "no spaces allowed"}),
            ndjson({"external_id": "ok-3", "name": "Three"}),
        ]
    )

    done = finished(api, start_import(api, body))

    assert done["status"] == "succeeded", done
    result = done["result"]
    assert (result["rows"], result["imported"], result["invalid"], result["created"]) == (7, 2, 5, 2)
    assert set(Recipient.objects.filter(tenant=tenant).values_list("external_id", flat=True)) == {"ok-1", "ok-3"}
    assert Recipient.objects.get(tenant=tenant, external_id="ok-1").name == ""  # the first row won
    report = [(row["row"], row["field"]) for row in error_report(api, done)]
    assert report == [
        ("2", "email"),
        ("3", "non_field_errors"),
        ("5", "colour"),
        ("5", "external_id"),
        ("7", "topic"),
        ("6", "external_id"),  # listed twice: found once the whole file is staged
    ]
    assert "first on row 1" in error_report(api, done)[-1]["message"]


def test_a_topic_column_subscribes_recipients_and_creates_the_topics_it_names(api, tenant, make_recipients, worker):
    existing = Topic.objects.create(tenant=tenant, key="beta")
    body = ndjson(
        {"external_id": "t-1", "topic": "beta"},
        {"external_id": "t-2", "topic": "launch-2030"},
        {"external_id": "t-3", "topic": "beta"},
        {"external_id": "t-4"},
    )

    done = finished(api, start_import(api, body))

    assert done["status"] == "succeeded", done
    assert (done["result"]["memberships_added"], done["result"]["topics_created"]) == (3, 1)
    members = set(TopicMembership.objects.values_list("topic__key", "recipient__external_id"))
    assert members == {("beta", "t-1"), ("beta", "t-3"), ("launch-2030", "t-2")}
    assert Topic.objects.get(tenant=tenant, key="beta").pk == existing.pk


def test_importing_the_same_file_again_changes_nothing(api, tenant, worker):
    body = ndjson(*({"external_id": f"r-{i}", "email": f"r-{i}@example.com", "topic": "all"} for i in range(50)))
    first = finished(api, start_import(api, body))
    before = list(Recipient.objects.filter(tenant=tenant).order_by("pk").values())

    again = finished(api, start_import(api, body))

    assert (first["result"]["created"], first["result"]["memberships_added"]) == (50, 50)
    assert again["result"] | {"created": 0, "updated": 0, "unchanged": 50, "memberships_added": 0} == again["result"]
    assert list(Recipient.objects.filter(tenant=tenant).order_by("pk").values()) == before  # updated_at too
    assert TopicMembership.objects.count() == 50


def test_another_tenants_recipients_with_the_same_external_ids_are_untouched(
    api, tenant, other_tenant, make_recipients, worker
):
    make_recipients(2, prefix="shared", for_tenant=other_tenant, name="Theirs")
    Topic.objects.create(tenant=other_tenant, key="news")
    body = ndjson(
        {"external_id": "shared-0", "name": "Ours", "topic": "news"},
        {"external_id": "shared-1", "name": "Ours", "topic": "news"},
    )

    done = finished(api, start_import(api, body))

    assert (done["result"]["created"], done["result"]["topics_created"]) == (2, 1)
    theirs = Recipient.objects.filter(tenant=other_tenant)
    assert sorted(theirs.values_list("name", flat=True)) == ["Theirs", "Theirs"]
    assert not TopicMembership.objects.filter(topic__tenant=other_tenant).exists()
    assert set(TopicMembership.objects.values_list("topic__tenant", "recipient__tenant").distinct()) == {
        (tenant.pk, tenant.pk)
    }


def test_the_task_progress_moves(api, tenant, worker):
    rows = 40_000
    body = ndjson(*({"external_id": f"p-{i}", "email": f"p-{i}@example.com"} for i in range(rows)))
    response = start_import(api, body)
    assert response.status_code == 202
    seen: list[tuple[str, Any, str]] = []

    def final() -> dict[str, Any] | None:
        body = api.get(response["Location"]).json()
        progress = body["progress"]
        seen.append((body["status"], progress["percent"], progress["message"]))
        return body if body["status"] in FINAL else None

    done = wait_for(final, timeout=120, interval=0.02)

    assert done["status"] == "succeeded", done
    assert done["result"]["created"] == rows
    running = [(percent, message) for status, percent, message in seen if status == "running" and percent is not None]
    assert any(0 < percent < 100 for percent, _ in running), seen[-10:]
    assert done["progress"]["message"] == "done"


def test_a_file_with_an_unknown_csv_column_fails_and_imports_nothing(api, tenant, worker):
    done = finished(api, start_import(api, b"external_id,favourite_colour\nc-1,red\n", "text/csv"))

    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_header"
    assert not Recipient.objects.filter(tenant=tenant).exists()


# --- Refused at the door -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_body_over_the_import_limit_is_413_and_nothing_is_written(api, tenant, settings):
    settings.SIGNALBOX_IMPORT_MAX_BYTES = 1000
    body = ndjson(*({"external_id": f"big-{i}"} for i in range(100)))
    assert len(body) > 1000

    response = start_import(api, body)

    assert response.status_code == 413
    assert (response.json()["code"], response.json()["fields"]) == ("too_large", {"limit_bytes": 1000})
    assert not TaskExecution.objects.exists()
    assert not Recipient.objects.exists()
    assert uploads_of(tenant) == []


@pytest.mark.django_db
def test_the_import_is_not_held_to_the_json_body_limit(api, tenant, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # the JSON endpoints' limit
    body = ndjson(*({"external_id": f"big-{i}"} for i in range(100)))

    response = start_import(api, body)
    json_response = api.post("/api/v1/recipients/bulk/", {"recipients": [{"external_id": "x" * 2000}]}, format="json")

    assert response.status_code == 202, response.content
    assert TaskExecution.objects.get().input["bytes"] == len(body)
    assert json_response.status_code == 413


@pytest.mark.django_db
def test_an_unsupported_content_type_is_415(api, tenant):
    response = api.post(URL, {"recipients": [{"external_id": "a"}]}, format="json")

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert not TaskExecution.objects.exists()


@pytest.mark.django_db
def test_an_empty_body_is_an_empty_file_and_needs_a_supported_content_type_too(api, tenant):
    empty = start_import(api, b"", "text/csv")
    wrong = start_import(api, b"", "application/json")

    assert empty.status_code == 202, empty.content
    assert TaskExecution.objects.get().input | {"format": "csv", "bytes": 0} == TaskExecution.objects.get().input
    assert (wrong.status_code, wrong.json()["code"]) == (415, "unsupported_media_type")


@pytest.mark.django_db
def test_the_same_idempotency_key_and_file_start_one_import(api, tenant):
    body = ndjson({"external_id": "once"})

    first = start_import(api, body, HTTP_IDEMPOTENCY_KEY="import-1")
    again = start_import(api, body, HTTP_IDEMPOTENCY_KEY="import-1")
    other = start_import(api, ndjson({"external_id": "twice"}), HTTP_IDEMPOTENCY_KEY="import-1")

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    assert again["Location"] == first["Location"]
    assert other.status_code == 422
    assert TaskExecution.objects.count() == 1
    assert len(uploads_of(tenant)) == 1


@pytest.mark.django_db
def test_the_task_refuses_an_upload_of_another_tenant(api, tenant, other_tenant):
    path = imports.upload_path(tenant_id=other_tenant.pk, format="ndjson")

    response = api.post(
        "/api/v1/tasks/",
        {"name": imports.TASK_NAME, "input": {"upload": path, "format": "ndjson"}},
        format="json",
    )

    assert response.status_code == 400
    assert "upload" in response.json()["fields"]["input"]


# --- The SQL it costs ----------------------------------------------------------------------------


class Recorder:
    """The three things the import asks of its runner, kept in memory (the worker gives a TaskContext)."""

    def __init__(self) -> None:
        self.progressed: list[tuple[int, int | None, str | None]] = []
        self.files: dict[str, bytes] = {}

    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None:
        self.progressed.append((current, total, message))

    def check_cancelled(self) -> None:
        return None

    def save_file(self, filename: str, content: Any, content_type: str = "") -> str:
        self.files[filename] = content.read()
        return filename


def _statements(tenant: Any, rows: int) -> tuple[int, dict[str, Any]]:
    body = ndjson(
        *({"external_id": f"s-{i}", "email": f"s-{i}@example.com", "topic": f"t{i % 3}"} for i in range(rows))
    )
    path = default_storage.save(imports.upload_path(tenant_id=tenant.pk, format="ndjson"), ContentFile(body))
    try:
        with CaptureQueriesContext(connection) as queries:
            result = imports.recipients_import_run(ctx=Recorder(), tenant_id=tenant.pk, path=path, format="ndjson")
    finally:
        default_storage.delete(path)
    return len(queries.captured_queries), result


@pytest.mark.django_db(transaction=True)
def test_fifty_thousand_rows_take_a_bounded_number_of_statements(tenant, other_tenant):
    small, small_result = _statements(other_tenant, 2_000)
    large, large_result = _statements(tenant, 50_000)

    assert (small_result["created"], large_result["created"]) == (2_000, 50_000)
    assert large_result["memberships_added"] == 50_000
    # One COPY per STAGE_ROWS rows and one merge per MERGE_ROWS: a handful more, not one per row.
    copies = 50_000 // imports.STAGE_ROWS
    assert large <= small + copies, (small, large)
    assert large < 30, large
