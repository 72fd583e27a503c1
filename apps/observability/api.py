"""The audit log API: `GET /api/v1/audit/` (newest first, filterable) and `GET /api/v1/audit/<id>/`.

Read-only and tenant-scoped: a key sees its own tenant's entries, never another's, and never the
platform entries that have no tenant. Needs the `read` scope.
"""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets

from apps.core.tenancy import TenantScopedMixin
from apps.observability.filters import AuditEntryFilter
from apps.observability.models import AuditEntry
from apps.observability.serializers import AuditEntrySerializer


@extend_schema_view(
    list=extend_schema(summary="The audit log: who did what, newest first", responses={200: AuditEntrySerializer}),
    retrieve=extend_schema(summary="One audit entry", responses={200: AuditEntrySerializer}),
)
class AuditEntryViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[AuditEntry]
):
    queryset = AuditEntry.objects.order_by("-created_at", "-id")
    serializer_class = AuditEntrySerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditEntryFilter
