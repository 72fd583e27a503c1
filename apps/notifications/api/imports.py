"""Bulk import of recipients over the API: one streamed file, one tracked task.

    POST /api/v1/recipients/imports/   an NDJSON or CSV file as the body → 202 + Location of the task

The body is streamed to a temporary file chunk by chunk (never read whole into memory), under its own
limit, `SIGNALBOX_IMPORT_MAX_BYTES` (1 GiB by default) rather than the 8 MiB of JSON bodies; then
stored and imported by the worker (services/imports.py). The client polls the `Location`; the result
counts what changed, and the download (`download_url`) is the CSV of refused rows.
"""

from __future__ import annotations

import hashlib
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import TemporaryUploadedFile
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.parsers import BaseParser, DataAndFiles
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.idempotency import accepts_idempotency_key, idempotent
from apps.core.parsers import too_large
from apps.core.schema import AutoSchema, ErrorSerializer
from apps.core.tenancy import request_tenant
from apps.notifications.services.imports import FORMATS, recipients_import_start
from apps.tasks.conf import poll_retry_after_seconds
from apps.tasks.serializers import TaskExecutionSerializer, task_url
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import Scope

CHUNK_BYTES = 1024 * 1024


def import_max_bytes() -> int:
    return int(settings.SIGNALBOX_IMPORT_MAX_BYTES)


class StreamedUploadParser(BaseParser):
    """Copies the body to a temporary file as it arrives, hashing it (the idempotency fingerprint is
    the format, size and SHA-256, not the body); refuses it past `import_max_bytes()` (413)."""

    def parse(self, stream: IO[bytes] | None, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = import_max_bytes()
        upload = TemporaryUploadedFile("upload", self.media_type, 0, None)
        digest = hashlib.sha256()
        size = 0
        try:
            while stream is not None and (chunk := stream.read(CHUNK_BYTES)):
                size += len(chunk)
                if size > limit:  # a body that announced less than it sends
                    raise too_large(limit)
                digest.update(chunk)
                upload.write(chunk)
            upload.flush()
            upload.seek(0)
        except BaseException:
            upload.close()
            raise
        upload.size = size
        data = {"format": FORMATS[self.media_type], "bytes": size, "sha256": digest.hexdigest()}
        return DataAndFiles(data, {"upload": upload})  # type: ignore[arg-type]


class NdjsonUploadParser(StreamedUploadParser):
    media_type = "application/x-ndjson"


class CsvUploadParser(StreamedUploadParser):
    media_type = "text/csv"


NDJSON_EXAMPLE = (
    '{"external_id": "user-1", "email": "ada@example.com", "name": "Ada", "topic": "beta"}\n'
    '{"external_id": "user-2", "phone": "+14155550100", "locale": "fr-CA", "data": {"plan": "pro"}}\n'
)
CSV_EXAMPLE = "external_id,email,name,topic\nuser-1,ada@example.com,Ada,beta\nuser-2,bob@example.com,Bob,\n"


class BodyRequiredSchema(AutoSchema):
    """drf-spectacular marks a body given as a raw schema optional; this one names its content type."""

    def _get_request_body(self, direction: str = "request") -> Any:
        body = super()._get_request_body(direction)
        if body:
            body["required"] = True
        return body


class RecipientImportView(APIView):
    parser_classes = [NdjsonUploadParser, CsvUploadParser]
    schema = BodyRequiredSchema()
    write_scope = Scope.NOTIFICATIONS_WRITE

    @staticmethod
    def max_body_bytes() -> int:
        """Read by the request-limits middleware in place of the 8 MiB of JSON bodies."""
        return import_max_bytes()

    @extend_schema(
        operation_id="recipients_imports_create",
        summary="Import recipients (and topic memberships) from a file",
        description=(
            "Streams the body, an NDJSON file (one recipient object per line) or a CSV file with a header, "
            "to a tracked task and answers 202 with its `Location`; poll it until final. Each row is checked "
            "like `POST /api/v1/recipients/` (`external_id` required), plus an optional `topic`: the key of a "
            "topic to subscribe the recipient to, created if missing. An attribute a row leaves out (an empty "
            "CSV cell) keeps its stored value; a CSV `data` cell is a JSON object, `unsubscribed` true/false. "
            "Invalid rows are refused one by one and the valid ones still land: the task's result counts "
            "`created`, `updated`, `unchanged`, `invalid`, `memberships_added`, and its download is a CSV of "
            "the refused rows (`row`, `field`, `message`). Importing the same file again changes nothing. "
            "The body may be up to `SIGNALBOX_IMPORT_MAX_BYTES` (1 GiB by default; 413 `too_large` beyond) "
            "and must announce its `Content-Length`; an empty body imports nothing."
        ),
        request={
            "application/x-ndjson": {"type": "string", "format": "binary"},
            "text/csv": {"type": "string", "format": "binary"},
        },
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
        responses={
            202: OpenApiResponse(TaskExecutionSerializer, description="Queued; poll the `Location`."),
            413: OpenApiResponse(ErrorSerializer, description="`too_large`: over `SIGNALBOX_IMPORT_MAX_BYTES`."),
            415: OpenApiResponse(ErrorSerializer, description="Not `application/x-ndjson` or `text/csv`."),
        },
        examples=[
            OpenApiExample("NDJSON", value=NDJSON_EXAMPLE, request_only=True, media_type="application/x-ndjson"),
            OpenApiExample("CSV", value=CSV_EXAMPLE, request_only=True, media_type="text/csv"),
        ],
    )
    @accepts_idempotency_key("recipients.imports")
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        tenant = request_tenant(request)

        def start() -> tuple[Response, str]:
            format = FORMATS.get((request.content_type or "").split(";")[0].strip().lower())
            if format is None:  # DRF's parsers see only a body that is not empty
                raise UnsupportedMediaType(request.content_type)
            # No body is an empty file: an import of nothing, as honest as any other.
            upload = request.FILES.get("upload") or ContentFile(b"", name="upload")
            execution = recipients_import_start(
                tenant=tenant, upload=upload, format=format, actor=actor_from_request(request)
            )
            headers = {"Location": task_url(execution.id), "Retry-After": str(poll_retry_after_seconds())}
            body = TaskExecutionSerializer(execution).data
            return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers), str(execution.id)

        try:
            request.data  # noqa: B018  (streams the body to a temporary file: the parser above)
            response = idempotent(request, scope="recipients.imports", create=start)
        finally:
            for upload in request.FILES.values():
                upload.close()  # a replayed or refused upload leaves no temporary file behind
        if response.status_code == status.HTTP_202_ACCEPTED and isinstance(response.data, dict):
            response["Location"] = task_url(response.data["id"])  # a replay answers the same Location
        return response
