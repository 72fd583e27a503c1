"""Admin: the audit log (read-only; entries go only by retention) and the operations dashboard page."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html

from apps.observability.dashboard import dashboard_build
from apps.observability.models import AuditEntry, OperationsDashboard


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    list_display = (
        "created_at",
        "tenant",
        "action",
        "actor_type",
        "actor_id",
        "target_type",
        "target_id",
        "request_id",
    )
    list_filter = ("action", "actor_type", "target_type", ("tenant", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("action", "actor_id", "target_id", "request_id")
    date_hierarchy = "created_at"
    list_select_related = ("tenant",)
    show_full_result_count = False  # no COUNT(*) over a large table on every page
    fields = (
        "created_at",
        "tenant",
        "action",
        "actor_type",
        "actor_id",
        "target_type",
        "target_id",
        "request_id",
        "pretty_data",
    )
    readonly_fields = fields

    @admin.display(description="data")
    def pretty_data(self, entry: AuditEntry) -> Any:
        return format_html("<pre>{}</pre>", json.dumps(entry.data, indent=2, sort_keys=True, default=str))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OperationsDashboard)
class OperationsDashboardAdmin(admin.ModelAdmin[OperationsDashboard]):
    """The admin index lists "Operations dashboard" under Observability; its page is the dashboard."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Operations dashboard",
            "board": dashboard_build(),
            "opts": self.model._meta,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/observability/dashboard.html", context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
