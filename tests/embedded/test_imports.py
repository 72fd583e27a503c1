"""The SQLite branch of the recipients import (`services/imports._run_orm`): no staging table and no
COPY, batched upserts with the ORM, the same rows refused and the same counts as on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from apps.notifications.models import Recipient, Topic, TopicMembership
from apps.notifications.services import imports


class Recorder:
    """What the import asks of its runner (a TaskContext in the worker), kept in memory."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None:
        return None

    def check_cancelled(self) -> None:
        return None

    def save_file(self, filename: str, content: Any, content_type: str = "") -> str:
        self.files[filename] = content.read()
        return filename


def run(tenant: Any, lines: list[Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    body = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()
    path = default_storage.save(imports.upload_path(tenant_id=tenant.pk, format="ndjson"), ContentFile(body))
    recorder = Recorder()
    try:
        result = imports.recipients_import_run(ctx=recorder, tenant_id=tenant.pk, path=path, format="ndjson")
    finally:
        default_storage.delete(path)
    return result, list(csv.DictReader(io.StringIO(recorder.files["errors.csv"].decode())))


def test_an_import_upserts_with_the_orm_and_reports_the_refused_rows(tenant: Any):
    Topic.objects.create(tenant=tenant, key="beta")
    lines = [
        {"external_id": "a", "email": "a@example.com", "topic": "beta"},
        {"external_id": "b", "email": "nope"},
        "{broken",
        {"external_id": "a", "name": "Twice"},
        {"external_id": "c", "name": "C", "topic": "new-topic"},
    ]

    result, report = run(tenant, lines)

    assert result | {"rows": 5, "imported": 2, "invalid": 3, "created": 2, "memberships_added": 2} == result
    assert result["topics_created"] == 1
    assert [(row["row"], row["field"]) for row in report] == [
        ("2", "email"),
        ("3", "non_field_errors"),
        ("4", "external_id"),
    ]
    assert set(Recipient.objects.values_list("external_id", "name")) == {("a", ""), ("c", "C")}
    assert set(TopicMembership.objects.values_list("topic__key", "recipient__external_id")) == {
        ("beta", "a"),
        ("new-topic", "c"),
    }

    again, _ = run(tenant, lines)

    assert (again["created"], again["updated"], again["memberships_added"]) == (0, 2, 0)
    assert TopicMembership.objects.count() == 2
