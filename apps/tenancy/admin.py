"""Django admin for tenants and API keys. Key writes go through apps.tenancy.services, so they are audited."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from apps.tenancy import services
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import ApiKey, Tenant


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin[Tenant]):
    list_display = ("slug", "name", "is_active", "created_at")
    search_fields = ("slug", "name")


class ApiKeyForm(forms.ModelForm[ApiKey]):
    """Refuses here what the services would refuse in `save_model`, where it could only be a 500."""

    class Meta:
        model = ApiKey
        fields = ["name", "tenant", "is_platform", "scopes", "expiry_date", "revoked"]

    def clean_scopes(self) -> list[str]:
        scopes = self.cleaned_data.get("scopes") or []
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise forms.ValidationError('A list of scopes, e.g. ["read"].')
        unknown = sorted(set(scopes) - services.VALID_SCOPES)
        if unknown:
            raise forms.ValidationError(
                f"Unknown scopes: {', '.join(unknown)}; choose from {sorted(services.VALID_SCOPES)}."
            )
        return scopes

    def clean_expiry_date(self) -> Any:
        expiry = self.cleaned_data.get("expiry_date")
        if self.instance._state.adding and expiry is not None and expiry <= timezone.now():
            raise forms.ValidationError("Expiry must be in the future.")
        return expiry


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    form = ApiKeyForm
    list_display = ("prefix", "name", "tenant", "is_platform", "revoked", "expiry_date", "last_used_at", "created")
    list_filter = ("revoked", "is_platform", "tenant")
    search_fields = ("prefix", "name")
    readonly_fields = ("prefix", "last_used_at", "created", "rotated_from")
    fields = ("name", "tenant", "is_platform", "scopes", "expiry_date", "revoked", *readonly_fields)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        # A new key is usable: revoking is a change of an existing key (and audited as such).
        return self.fields if obj is not None else tuple(f for f in self.fields if f != "revoked")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return self.readonly_fields
        # A key's owner is fixed when it is made, and a revocation is final (the library refuses undoing it).
        owner = ("tenant", "is_platform", "revoked") if obj.revoked else ("tenant", "is_platform")
        return (*owner, *self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        actor = actor_from_request(request)
        if change:
            key = ApiKey.objects.select_related("tenant").get(pk=obj.pk)
            changes = {k: form.cleaned_data[k] for k in services.UPDATABLE_KEY_FIELDS if k in form.changed_data}
            if changes:
                services.api_key_update(key=key, actor=actor, **changes)
            if form.cleaned_data.get("revoked") and not key.revoked:
                services.api_key_revoke(key=key, actor=actor)
            return
        key, clear = services.api_key_create(
            tenant=obj.tenant,
            name=obj.name,
            scopes=obj.scopes,
            expires_at=obj.expiry_date,
            platform=obj.is_platform,
            created_by=f"staff:{request.user}",
            actor=actor,
        )
        obj.pk = key.pk
        obj.refresh_from_db()
        obj._state.adding = False
        messages.warning(request, f"The key is {clear} - copy it now, it will not be shown again.")
