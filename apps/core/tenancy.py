"""The one mechanism that scopes API data to the caller's tenant.

Every tenant-owned model inherits `TenantOwned`; every API view over one inherits
`TenantScopedMixin`, whose `get_queryset` filters by `request.tenant` and whose create sets it.
Views never filter by tenant themselves, so none can forget to. Another tenant's object is
simply not in the queryset, which answers 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.db import models
from rest_framework.generics import GenericAPIView, get_object_or_404
from rest_framework.request import Request

M = TypeVar("M", bound=models.Model)


class TenantQuerySet(models.QuerySet[M], Generic[M]):
    def for_tenant(self, tenant: Any) -> TenantQuerySet[M]:
        return self.filter(tenant=tenant)


class TenantOwned(models.Model):
    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="+")

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True


def request_tenant(request: Request) -> Any:
    return request.tenant  # type: ignore[attr-defined]


if TYPE_CHECKING:
    _ViewBase = GenericAPIView[Any]  # what the mixin is mixed into, so mypy checks `super()` and `request`
else:
    _ViewBase = object


class TenantScopedMixin(_ViewBase):
    """For DRF generic views and viewsets over a `TenantOwned` model."""

    def get_queryset(self) -> Any:
        return super().get_queryset().filter(tenant=request_tenant(self.request))

    def get_object(self) -> Any:
        """The object named in the URL, in the caller's tenant: one indexed read. The list's query-parameter
        filters (filter backends) are not applied to it, as the schema documents them on lists only."""
        lookup_url_kwarg = self.lookup_url_kwarg or self.lookup_field
        obj = get_object_or_404(self.get_queryset(), **{self.lookup_field: self.kwargs[lookup_url_kwarg]})
        self.check_object_permissions(self.request, obj)
        return obj

    def perform_create(self, serializer: Any) -> None:
        serializer.save(tenant=request_tenant(self.request))

    def get_serializer_context(self) -> dict[str, Any]:
        ctx = super().get_serializer_context()
        ctx["tenant"] = getattr(self.request, "tenant", None)
        return ctx
