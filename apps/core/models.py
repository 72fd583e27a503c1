"""Shared tables: idempotency records for intent-creating POSTs."""

from __future__ import annotations

from django.db import models

from apps.core.tenancy import TenantOwned


class IdempotencyRecord(TenantOwned):
    """The first answer to a POST with an `Idempotency-Key`, replayed for repeats of the same body.

    The unique constraint is the lock: a concurrent repeat blocks on it until the first
    transaction commits, then reads the stored answer.
    """

    scope = models.CharField(max_length=64, help_text="Which endpoint the key was used on.")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    response_sealed = models.BooleanField(
        default=False, help_text="The body holds a secret shown once, so it is stored encrypted (a string)."
    )
    resource_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delete_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "scope", "key"], name="idempotency_unique_key"),
        ]
