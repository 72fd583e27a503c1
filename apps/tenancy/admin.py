from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from apps.tenancy.models import ApiKey, Tenant


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin[Tenant]):
    list_display = ("slug", "name", "is_active", "created_at")
    search_fields = ("slug", "name")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ("prefix", "name", "tenant", "is_platform", "revoked", "expiry_date", "last_used_at", "created")
    list_filter = ("revoked", "is_platform", "tenant")
    search_fields = ("prefix", "name")
    readonly_fields = ("prefix", "last_used_at", "created", "rotated_from")
    fields = ("name", "tenant", "is_platform", "scopes", "expiry_date", "revoked", *readonly_fields)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        clear = ApiKey.objects.assign_key(obj)
        obj.created_by = f"staff:{request.user}"
        obj.save()
        messages.warning(request, f"The key is {clear} - copy it now, it will not be shown again.")
