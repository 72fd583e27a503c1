"""Admin for what providers report back: the suppression list (add an address, or delete a row to
allow an address again) and the log of applied status events (read only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.providers.models import ProviderEvent, Suppression


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin[Suppression]):
    list_display = ("address", "channel", "reason", "source", "tenant", "created_at")
    list_filter = ("channel", "reason", "tenant")
    search_fields = ("address", "source")
    readonly_fields = ("source", "delivery_id", "created_at")
    fields = ("tenant", "channel", "address", "reason", "detail", "source", "delivery_id", "created_at")
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # delete the row instead, and add another if the reason changed

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        from apps.notifications.services.suppressions import normalize

        obj.address = normalize(obj.channel, obj.address)
        obj.source = obj.source or f"staff:{request.user.get_username()}"
        super().save_model(request, obj, form, change)


@admin.register(ProviderEvent)
class ProviderEventAdmin(admin.ModelAdmin[ProviderEvent]):
    list_display = ("event_id", "provider", "kind", "received_at")
    list_filter = ("provider", "kind")
    search_fields = ("event_id",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
