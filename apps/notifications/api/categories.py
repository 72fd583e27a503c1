"""`/api/v1/categories/`: notification categories."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from rest_framework import viewsets

from apps.core.errors import ApplicationError, Conflict
from apps.core.idempotency import idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications import serializers
from apps.notifications.api.common import WRITE
from apps.notifications.models import Category
from apps.notifications.services import templates as template_services
from apps.observability.audit import audit_record
from apps.tenancy.actors import actor_from_request


class CategoryViewSet(TenantScopedMixin, viewsets.ModelViewSet[Category]):
    """Categories group templates for preferences; a critical one cannot be opted out of."""

    queryset = Category.objects.all().order_by("key")
    serializer_class = serializers.CategorySerializer
    lookup_field = "key"
    write_scope = WRITE
    create = idempotent_create("categories.create")(viewsets.ModelViewSet.create)

    def perform_create(self, serializer: Any) -> None:
        tenant = request_tenant(self.request)
        if Category.objects.filter(tenant=tenant, key=serializer.validated_data["key"]).exists():
            raise Conflict(
                "A category with this key exists.", code="category_exists", fields={"key": ["Already exists."]}
            )
        try:
            with transaction.atomic():
                category = serializer.save(tenant=tenant)
        except IntegrityError as exc:  # a concurrent create of the same key won between check and save
            raise Conflict(
                "A category with this key exists.", code="category_exists", fields={"key": ["Already exists."]}
            ) from exc
        audit_record(
            action="category.created",
            tenant=tenant,
            actor=actor_from_request(self.request),
            target=category,
            data={"critical": category.critical},
        )

    def perform_update(self, serializer: Any) -> None:
        if serializer.validated_data.get("key", serializer.instance.key) != serializer.instance.key:
            raise ApplicationError(
                "The key of a category cannot change.", code="validation_error", fields={"key": ["Immutable."]}
            )
        category = serializer.save()
        audit_record(
            action="category.updated",
            tenant=request_tenant(self.request),
            actor=actor_from_request(self.request),
            target=category,
            data={"critical": category.critical},
        )

    def perform_destroy(self, instance: Category) -> None:
        try:
            template_services.category_delete(category=instance)
        except ProtectedError as exc:
            raise Conflict("Notifications refer to this category.", code="category_in_use") from exc
