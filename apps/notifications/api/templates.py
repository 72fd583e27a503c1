"""`/api/v1/templates/`: templates, their versions, archive and preview."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import ApplicationError, NotFound
from apps.core.idempotency import idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications import selectors, serializers
from apps.notifications.api.common import WRITE
from apps.notifications.models import Template
from apps.notifications.services import templates as template_services
from apps.tenancy.actors import actor_from_request

TEMPLATE_EXAMPLE = OpenApiExample(
    "Order shipped, in English and French",
    request_only=True,
    value={
        "key": "order_shipped",
        "name": "Order shipped",
        "category": "orders",
        "variables": [
            {"name": "order_id", "example": "A-1001"},
            {"name": "carrier", "required": False, "example": "UPS"},
        ],
        "default_channels": ["email", "in_app"],
        "content": {
            "default": {
                "email": {
                    "subject": "Order {{ order_id }} shipped",
                    "text": "Hi {{ recipient.name }}, order {{ order_id }} is on its way.",
                    "html": "<p>Hi {{ recipient.name }}, order <b>{{ order_id }}</b> is on its way.</p>",
                },
                "in_app": {
                    "title": "Order {{ order_id }} shipped",
                    "body": "Track it in your account.",
                    "action_url": "/orders/{{ order_id }}",
                },
            },
            "fr": {
                "email": {
                    "subject": "Commande {{ order_id }} expédiée",
                    "text": "Votre commande {{ order_id }} est en route.",
                }
            },
        },
    },
)


class TemplateFilter(django_filters.FilterSet):
    archived = django_filters.BooleanFilter(method="filter_archived", help_text="Default: only active templates.")
    category = django_filters.CharFilter(field_name="category__key")

    class Meta:
        model = Template
        fields = ["archived", "category"]

    def filter_archived(self, queryset: QuerySet[Template], name: str, value: bool) -> QuerySet[Template]:
        return queryset.filter(archived_at__isnull=not value)


@extend_schema_view(
    list=extend_schema(
        summary="List templates (active ones unless ?archived=true)",
        responses={200: serializers.TemplateSerializer(many=True)},
    ),
    retrieve=extend_schema(
        summary="A template with its current version",
        responses={200: serializers.TemplateSerializer},
    ),
)
class TemplateViewSet(TenantScopedMixin, viewsets.ModelViewSet[Template]):
    queryset = Template.objects.select_related("current_version", "category").order_by("key")
    serializer_class = serializers.TemplateSerializer
    filterset_class = TemplateFilter
    lookup_field = "key"
    write_scope = WRITE

    def filter_queryset(self, queryset: Any) -> Any:
        queryset = super().filter_queryset(queryset)
        if self.action == "list" and "archived" not in self.request.query_params:
            queryset = queryset.filter(archived_at__isnull=True)
        return queryset

    @extend_schema(
        summary="Create a template (version 1)",
        description="Content that does not parse, or uses a variable not declared in `variables`, is refused "
        "with per-field errors. Templates see their variables and `recipient` (external_id, name, email, "
        "phone, locale, timezone, data).",
        request=serializers.TemplateWriteSerializer,
        responses={
            201: serializers.TemplateSerializer,
            409: OpenApiResponse(description="Key exists."),
        },
        examples=[TEMPLATE_EXAMPLE],
    )
    @idempotent_create("templates.create")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.TemplateWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        key = data.pop("key", None)
        if not key:
            raise ApplicationError(
                "A key is required.", code="validation_error", fields={"key": ["This field is required."]}
            )
        if "content" not in data:
            raise ApplicationError(
                "Content is required.", code="validation_error", fields={"content": ["This field is required."]}
            )
        template = template_services.template_create(
            tenant=request_tenant(request), key=key, definition=data, actor=actor_from_request(request)
        )
        return Response(serializers.TemplateSerializer(template).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a template (adds a version)",
        description="Every change is a new immutable version; deliveries record the version they used. "
        "PUT and PATCH both keep fields you leave out; an unchanged definition adds no version.",
        request=serializers.TemplateWriteSerializer,
        responses={
            200: serializers.TemplateSerializer,
            409: OpenApiResponse(description="Archived."),
        },
    )
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template = self.get_object()
        body = serializers.TemplateWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        changes = dict(body.validated_data)
        if changes.pop("key", template.key) != template.key:
            raise ApplicationError(
                "The key of a template cannot change.", code="validation_error", fields={"key": ["Immutable."]}
            )
        template, _ = template_services.template_update(
            template=template, changes=changes, actor=actor_from_request(request)
        )
        return Response(serializers.TemplateSerializer(self.get_queryset().get(pk=template.pk)).data)

    @extend_schema(
        summary="Change a template (adds a version)",
        request=serializers.TemplateWriteSerializer,
        responses={200: serializers.TemplateSerializer},
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, **kwargs)

    @extend_schema(summary="Archive a template (restorable; it can no longer be sent)", responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template_services.template_archive(template=self.get_object(), actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Restore an archived template",
        request=None,
        responses={200: serializers.TemplateSerializer},
    )
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template = template_services.template_restore(template=self.get_object(), actor=actor_from_request(request))
        return Response(serializers.TemplateSerializer(template).data)

    @extend_schema(
        summary="Every version of a template, newest first",
        responses={200: serializers.TemplateVersionSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        qs = selectors.template_versions(template=self.get_object())
        page = self.paginate_queryset(qs)  # type: ignore[arg-type]  # a list of another model
        data = serializers.TemplateVersionSerializer(page if page is not None else qs, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    @extend_schema(summary="One version of a template", responses={200: serializers.TemplateVersionSerializer})
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]+)")
    def version(self, request: Request, number: str, *args: Any, **kwargs: Any) -> Response:
        version = selectors.template_versions(template=self.get_object()).filter(version=int(number)).first()
        if version is None:
            raise NotFound("No such version.", code="version_not_found")
        return Response(serializers.TemplateVersionSerializer(version).data)

    @extend_schema(
        summary="Render every locale and channel with sample data",
        description="Variables not in `data` use their declared `example` (or a placeholder); `recipient` is a sample.",
        request=serializers.TemplatePreviewSerializer,
        responses={200: serializers.TemplatePreviewResultSerializer},
        examples=[OpenApiExample("Preview with an order id", request_only=True, value={"data": {"order_id": "B-7"}})],
    )
    @action(detail=True, methods=["post"])
    def preview(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template = self.get_object()
        body = serializers.TemplatePreviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = template.current_version
        if body.validated_data.get("version"):
            version = (
                selectors.template_versions(template=template).filter(version=body.validated_data["version"]).first()
            )
            if version is None:
                raise NotFound("No such version.", code="version_not_found")
        rendered = template_services.template_preview(
            template=template, data=body.validated_data["data"], version=version
        )
        return Response({"version": version.version if version else None, "rendered": rendered})
