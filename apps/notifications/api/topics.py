"""`/api/v1/topics/`: topics and their subscribers."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import ApplicationError, Conflict
from apps.core.idempotency import idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications import serializers
from apps.notifications.api.common import WRITE
from apps.notifications.models import Recipient, Topic
from apps.notifications.services import recipients as recipient_services


@extend_schema_view(
    list=extend_schema(summary="List topics"),
    create=extend_schema(summary="Create a topic"),
    retrieve=extend_schema(summary="A topic and its subscriber count"),
    destroy=extend_schema(summary="Delete a topic (its memberships go with it)"),
)
class TopicViewSet(TenantScopedMixin, viewsets.ModelViewSet[Topic]):
    queryset = Topic.objects.annotate(subscribers=Count("memberships")).order_by("key")
    serializer_class = serializers.TopicSerializer
    lookup_field = "key"
    write_scope = WRITE
    create = idempotent_create("topics.create")(viewsets.ModelViewSet.create)

    def perform_create(self, serializer: Any) -> None:
        tenant = request_tenant(self.request)
        if Topic.objects.filter(tenant=tenant, key=serializer.validated_data["key"]).exists():
            raise Conflict("A topic with this key exists.", code="topic_exists", fields={"key": ["Already exists."]})
        try:
            with transaction.atomic():
                serializer.save(tenant=tenant)
        except IntegrityError as exc:  # a concurrent create of the same key won between check and save
            raise Conflict(
                "A topic with this key exists.", code="topic_exists", fields={"key": ["Already exists."]}
            ) from exc

    def perform_update(self, serializer: Any) -> None:
        if serializer.validated_data.get("key", serializer.instance.key) != serializer.instance.key:
            raise ApplicationError(
                "The key of a topic cannot change.", code="validation_error", fields={"key": ["Immutable."]}
            )
        serializer.save()

    @extend_schema(
        methods=["GET"],
        summary="A topic's subscribers",
        responses={200: serializers.RecipientSerializer(many=True)},
    )
    @extend_schema(
        methods=["POST"],
        summary="Subscribe recipients (by external_id, up to 10,000 per call)",
        request=serializers.SubscribersSerializer,
        responses={200: serializers.SubscribersResultSerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def subscribers(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        topic = self.get_object()
        if request.method == "POST":
            body = serializers.SubscribersSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            added = recipient_services.topic_subscribe(topic=topic, external_ids=body.validated_data["recipients"])
            return Response({"added": added})
        qs = Recipient.objects.filter(topic_memberships__topic=topic).order_by("external_id")
        page = self.paginate_queryset(qs)  # type: ignore[arg-type]  # a list of another model
        data = serializers.RecipientSerializer(page if page is not None else qs, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    @extend_schema(
        summary="Unsubscribe recipients from the topic",
        request=serializers.SubscribersSerializer,
        responses={200: serializers.SubscribersResultSerializer},
    )
    @action(detail=True, methods=["post"], url_path="subscribers/remove")
    def remove_subscribers(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.SubscribersSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        removed = recipient_services.topic_unsubscribe(
            topic=self.get_object(), external_ids=body.validated_data["recipients"]
        )
        return Response({"removed": removed})
