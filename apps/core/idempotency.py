"""`Idempotency-Key` for intent-creating POSTs, in the manner of Stripe's.

Same key and same body: the first answer again (status and body), flagged with
`Idempotent-Replayed: true`. Same key, different body: 422 `idempotency_key_reused`.
Keys are kept for `IDEMPOTENCY_TTL_HOURS` (24 by default).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import ApplicationError, Unprocessable
from apps.core.models import IdempotencyRecord

HEADER = "Idempotency-Key"


def request_fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.request_hash != fingerprint:
        raise Unprocessable(
            "This Idempotency-Key was used with a different request body.", code="idempotency_key_reused"
        )
    return Response(record.response_body, status=record.response_status, headers={"Idempotent-Replayed": "true"})


def idempotent(request: Request, *, scope: str, create: Callable[[], tuple[Response, str]]) -> Response:
    """Runs `create` once per (tenant, scope, key); `create` returns the answer and the resource id.

    `create` runs inside the same transaction as the idempotency row, so either both exist or
    neither does.
    """
    key = request.headers.get(HEADER, "").strip()
    if not key:
        with transaction.atomic():
            return create()[0]
    if len(key) > 255:
        raise ApplicationError("Idempotency-Key is at most 255 characters.", code="invalid_idempotency_key")
    tenant = request.tenant  # type: ignore[attr-defined]
    fingerprint = request_fingerprint(request.data)
    existing = IdempotencyRecord.objects.filter(tenant=tenant, scope=scope, key=key).first()
    if existing is not None:
        return _replay(existing, fingerprint)
    try:
        with transaction.atomic():
            response, resource_id = create()
            ttl = timedelta(hours=getattr(settings, "IDEMPOTENCY_TTL_HOURS", 24))
            IdempotencyRecord.objects.create(
                tenant=tenant,
                scope=scope,
                key=key,
                request_hash=fingerprint,
                response_status=response.status_code,
                response_body=json.loads(json.dumps(response.data, default=str)),
                resource_id=resource_id,
                delete_at=timezone.now() + ttl,
            )
            return response
    except IntegrityError:
        # A concurrent request with the same key committed first: answer what it answered.
        record = IdempotencyRecord.objects.get(tenant=tenant, scope=scope, key=key)
        return _replay(record, fingerprint)
