"""`Idempotency-Key` on every POST that creates something, in the manner of Stripe's.

Same key and same body: the first answer again (status and body), flagged with
`Idempotent-Replayed: true`. Same key, different body: 422 `idempotency_key_reused`.
Keys are kept for `IDEMPOTENCY_TTL_HOURS` (24 by default), per tenant and per operation (and per
object, for `POST …/<id>/action/`). Only a successful (2xx) answer is kept: a refused request can be
corrected and sent again with the same key.

A view method opts in with `@idempotent_create("scope")`, which runs it under `idempotent`; a view
that calls `idempotent` itself says so with `@accepts_idempotency_key`. Both mark the method, and
the schema hook (`apps/core/schema.py`) documents the header on every marked operation;
`tests/foundation/test_idempotency_everywhere.py` fails on a creating POST (201/202) without it.
An answer that holds a secret shown once (an API key, a signing secret) is stored encrypted, like
every other secret at rest (`sealed=True`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core import crypto  # the one Fernet keyring for secrets at rest
from apps.core.conf import core_settings
from apps.core.errors import ApplicationError, Unprocessable
from apps.core.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MARKER = "idempotency_scope"  # the attribute `idempotent_create` and `accepts_idempotency_key` set
F = TypeVar("F", bound=Callable[..., Any])


def request_fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _seal(body: Any) -> str:
    return crypto.encrypt(json.dumps(body))


def _unseal(token: str) -> Any:
    return json.loads(crypto.decrypt(token))


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.request_hash != fingerprint:
        raise Unprocessable(
            "This Idempotency-Key was used with a different request body.", code="idempotency_key_reused"
        )
    body = _unseal(record.response_body) if record.response_sealed else record.response_body
    if record.response_status == 204:
        body = None
    return Response(body, status=record.response_status, headers={"Idempotent-Replayed": "true"})


def _key(request: Request) -> str:
    key = request.headers.get(HEADER, "").strip()
    if len(key) > 255:
        raise ApplicationError("Idempotency-Key is at most 255 characters.", code="invalid_idempotency_key")
    if "\x00" in key:
        raise ApplicationError("Idempotency-Key may not contain NUL.", code="invalid_idempotency_key")
    return key


def idempotent(
    request: Request, *, scope: str, create: Callable[[], tuple[Response, str]], sealed: bool = False
) -> Response:
    """Runs `create` once per (tenant, scope, key); `create` returns the answer and the resource id.

    `create` runs inside the same transaction as the idempotency row, so either both exist or
    neither does.
    """
    key = _key(request)
    if not key:
        with transaction.atomic():
            return create()[0]
    tenant = request.tenant  # type: ignore[attr-defined]
    fingerprint = request_fingerprint(request.data)
    existing = IdempotencyRecord.objects.filter(tenant=tenant, scope=scope, key=key).first()
    if existing is not None:
        return _replay(existing, fingerprint)
    try:
        with transaction.atomic():
            response, resource_id = create()
            if not 200 <= response.status_code < 300:
                return response
            ttl = timedelta(hours=core_settings().idempotency_ttl_hours)
            body = json.loads(json.dumps(response.data if response.data is not None else {}, default=str))
            IdempotencyRecord.objects.create(
                tenant=tenant,
                scope=scope,
                key=key,
                request_hash=fingerprint,
                response_status=response.status_code,
                response_body=_seal(body) if sealed else body,
                response_sealed=sealed,
                resource_id=resource_id[:64],
                delete_at=timezone.now() + ttl,
            )
            return response
    except IntegrityError:
        # A concurrent request with the same key committed first: answer what it answered. Any other
        # constraint that `create` broke is not ours to answer.
        record = IdempotencyRecord.objects.filter(tenant=tenant, scope=scope, key=key).first()
        if record is None:
            raise
        return _replay(record, fingerprint)


def _scope_of(name: str, url_kwargs: dict[str, Any]) -> str:
    """`name`, made distinct per object for `POST …/<id>/action/` (at most 64 characters)."""
    object_kwargs = {k: str(v) for k, v in url_kwargs.items() if k != "version"}
    if not object_kwargs:
        return name
    digest = hashlib.sha256(json.dumps(object_kwargs, sort_keys=True).encode()).hexdigest()[:16]
    return f"{name[:47]}:{digest}"


def _resource_id(response: Response) -> str:
    data = response.data
    if isinstance(data, dict):
        for field in ("id", "key", "external_id", "prefix"):
            if data.get(field) is not None:
                return str(data[field])
    return ""


def idempotent_create(scope: str, *, sealed: bool = False) -> Callable[[F], F]:
    """Makes a view method's POST honour `Idempotency-Key` (see the module docstring).

    Goes under `@action` / `@extend_schema`, right above the method. Other methods the same view
    method serves (a GET on the same action) pass through untouched.
    """

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Any:
            if request.method != "POST":
                return method(view, request, *args, **kwargs)

            def create() -> tuple[Response, str]:
                response = method(view, request, *args, **kwargs)
                return response, _resource_id(response)

            return idempotent(request, scope=_scope_of(scope, kwargs), create=create, sealed=sealed)

        setattr(wrapper, MARKER, scope)
        return wrapper  # type: ignore[return-value]

    return decorate


def accepts_idempotency_key(scope: str) -> Callable[[F], F]:
    """Marks a view method that calls `idempotent` itself, so the schema documents the header."""

    def decorate(method: F) -> F:
        setattr(method, MARKER, scope)
        return method

    return decorate


def honours_idempotency_key(handler: Any) -> bool:
    return bool(getattr(handler, MARKER, None))
