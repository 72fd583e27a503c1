"""The notifications app's tracked task types (polled at /api/v1/tasks/<id>/): the recipients import.

Registered by `NotificationsConfig.ready()` (so in the web and worker processes alike; imported from
tasks.py it would close an import cycle through services). The work itself is in services/imports.py.
"""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from rest_framework import serializers

from apps.notifications.services.imports import (
    FORMATS,
    TASK_NAME,
    ImportRefused,
    is_upload_of,
    recipients_import_run,
)
from apps.tasks.registry import tracked_task
from apps.tasks.runtime import Cancelled, Superseded, TaskContext, TaskError


class ImportInput(serializers.Serializer[Any]):
    upload = serializers.CharField(max_length=300, help_text="The stored upload (set by POST /recipients/imports/).")
    format = serializers.ChoiceField(choices=sorted(set(FORMATS.values())))
    bytes = serializers.IntegerField(min_value=0, required=False, help_text="The upload's size.")

    def validate_upload(self, value: str) -> str:
        tenant = self.context.get("tenant")
        # Only an upload of the caller's own tenant: the path is the one thing that names data.
        if tenant is None or not is_upload_of(value, tenant_id=tenant.pk):
            raise serializers.ValidationError("Not an upload of this tenant; use POST /api/v1/recipients/imports/.")
        return value


@tracked_task(
    name=TASK_NAME,
    queue="tasks",
    input=ImportInput,
    max_retries=2,
    retry_backoff=30,
    soft_time_limit=3000,
    time_limit=3060,
)
def import_recipients(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
    """Imports recipients (and topic memberships) from an uploaded NDJSON or CSV file; errors as a CSV download."""
    path = data["upload"]
    final = True
    try:
        if not default_storage.exists(path):
            raise TaskError("upload_missing", "The uploaded file is gone; upload it again.")
        return recipients_import_run(ctx=ctx, tenant_id=ctx.tenant_id, path=path, format=data["format"])
    except ImportRefused as refused:
        raise TaskError(refused.code, refused.message) from None
    except (TaskError, Cancelled):
        raise
    except Superseded:
        final = False  # the attempt that took over reads the upload
        raise
    except BaseException:
        final = ctx.attempt >= ctx.max_attempts  # a retry reads the upload again
        raise
    finally:
        if final:
            default_storage.delete(path)
