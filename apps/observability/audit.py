"""Recording audit entries, and keeping them only as long as retention says.

Call `audit_record` in the same transaction as the change it describes; `audit_purge` runs hourly
on the maintenance queue (`signalbox.maintenance.purge_audit`).
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Q

from apps.core import context
from apps.core.actors import SYSTEM, Actor
from apps.core.retention import RetentionPolicy, all_tenants, purge_policy_run
from apps.observability.models import AuditEntry

# An API key's primary key is `<prefix>.<its SHA-512 hash>` (djangorestframework-api-key), and a clear
# key is `<prefix>.<secret>`: the audit log names a key by its prefix alone, which any `read` key sees.
API_KEY_ID = re.compile(r"^(sbx_[A-Za-z0-9]{8})\..*$", re.DOTALL)


def redact_key_id(value: str) -> str:
    """`sbx_AbCd1234.sha512$$…` (or a clear key) -> `sbx_AbCd1234`; anything else unchanged."""
    return API_KEY_ID.sub(r"\1", value)


def audit_record(
    *,
    action: str,
    tenant: Any = None,
    actor: Actor = SYSTEM,
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """`actor` is who did it, built once at the edge (apps/tenancy/actors.py for a request)."""
    actor_type, actor_id = actor.record
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
    return AuditEntry.objects.create(
        tenant=tenant,
        actor_type=actor_type,
        actor_id=redact_key_id(actor_id),
        action=action,
        target_type=target_type,
        target_id=redact_key_id(target_id),
        data=data or {},
        request_id=context.get("request_id") or "",
    )


def _audit_model() -> type[AuditEntry]:
    return AuditEntry


def audit_retention_policy() -> RetentionPolicy:
    """Tenants' entries go after `tenant.settings["retention_days"]["audit"]` days, else AUDIT_RETENTION_DAYS."""
    return RetentionPolicy(
        name="audit",
        model=_audit_model,
        default_days=settings.AUDIT_RETENTION_DAYS,
        description="Audit log entries of a tenant.",
    )


def _platform_audit_retention_policy() -> RetentionPolicy:
    """Entries without a tenant (platform actions) follow AUDIT_RETENTION_DAYS."""
    return RetentionPolicy(
        name="audit",
        model=_audit_model,
        default_days=settings.AUDIT_RETENTION_DAYS,
        per_tenant=False,
        scope=lambda: Q(tenant__isnull=True),
        description="Audit log entries without a tenant.",
    )


def audit_purge(*, now: datetime | None = None, batch_size: int = 5000, max_seconds: float = 240.0) -> int:
    """Deletes expired audit entries in short batches (apps/core/retention.py); returns how many.

    Bounded in time (under the task's soft limit): what is left goes at the next run.
    """
    deadline = time.monotonic() + max_seconds
    purged = 0
    for policy in (audit_retention_policy(), _platform_audit_retention_policy()):
        result = purge_policy_run(policy, tenants=all_tenants(), batch_size=batch_size, now=now, deadline=deadline)
        purged += result.rows
    return purged
