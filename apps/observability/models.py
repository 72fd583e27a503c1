"""The audit log: who (an API key or a staff user) did what to which object, and when."""

from __future__ import annotations

from django.db import models


class AuditEntry(models.Model):
    tenant = models.ForeignKey("tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    actor_type = models.CharField(max_length=20, help_text="api_key, staff, system")
    actor_id = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100, help_text="Dotted verb, e.g. api_key.revoked, template.updated.")
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_time")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.actor_type}:{self.actor_id} {self.action} {self.target_type}:{self.target_id}"


class OperationsDashboard(AuditEntry):
    """Not a table of its own: the admin entry of the operations dashboard page (dashboard.py, admin.py)."""

    class Meta:
        proxy = True
        verbose_name = "operations dashboard"
        verbose_name_plural = "operations dashboard"
        default_permissions = ("view",)
