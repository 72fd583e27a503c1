"""`/api/v1/inbox/`: the in-app inbox, for a recipient token or an API key."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import ApplicationError
from apps.core.schema import ERROR_RESPONSES
from apps.core.tenancy import request_tenant
from apps.notifications import serializers
from apps.notifications.api.common import UUID_PATTERN, WRITE, InboxAccess
from apps.notifications.authentication import RecipientTokenAuthentication, recipient_of
from apps.notifications.models import Delivery, Recipient
from apps.notifications.services import inbox as inbox_services
from apps.tenancy.authentication import ApiKeyAuthentication

INBOX_EXAMPLE_URL = "https://signalbox.example.com/api/v1/inbox/?recipient=user-42"


class InboxPagination(CursorPagination):
    """Newest first, stable while new items arrive (ids are time-ordered UUIDs)."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        # The schema's examples show inbox links rather than DRF's generic `api.example.org/accounts/`.
        paginated = super().get_paginated_response_schema(schema)
        for name, cursor in (("next", "cD0wMTkwMDAwMA%3D%3D"), ("previous", "cj0xJnA9MDE5MDAwMDA%3D")):
            paginated["properties"][name]["example"] = f"{INBOX_EXAMPLE_URL}&cursor={cursor}"
        return paginated


RECIPIENT_PARAM = OpenApiParameter(
    "recipient",
    {"type": "string", "minLength": 1},
    OpenApiParameter.QUERY,
    required=True,
    description="The recipient's external_id: required with an API key; a recipient token may name its own.",
)


INBOX_LIST_EXAMPLES = [
    OpenApiExample(
        "An unread item",
        response_only=True,
        status_codes=["200"],
        value={
            "id": "01900000-0000-7000-8000-00000000000a",
            "notification": "01900000-0000-7000-8000-000000000000",
            "title": "Order A-1001 shipped",
            "body": "Track it in your account.",
            "action_url": "/orders/A-1001",
            "data": {},
            "locale": "en",
            "read": False,
            "created_at": "2030-01-01T09:00:00Z",
            "seen_at": None,
            "read_at": None,
            "archived_at": None,
        },
    ),
    OpenApiExample(
        "Refused: an API key must name the recipient",
        response_only=True,
        status_codes=["400"],
        value={
            "code": "validation_error",
            "message": "Name the recipient (?recipient=<external_id>) when using an API key.",
            "fields": {"recipient": ["Required with an API key."]},
        },
    ),
]


@extend_schema(parameters=[RECIPIENT_PARAM])
class InboxViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Delivery]):
    """One recipient's in-app inbox, for their browser (recipient token) or the tenant's back end (API key)."""

    authentication_classes = [RecipientTokenAuthentication, ApiKeyAuthentication]
    permission_classes = [InboxAccess]
    serializer_class = serializers.InboxItemSerializer
    pagination_class = InboxPagination
    write_scope = WRITE
    lookup_value_regex = UUID_PATTERN
    queryset = Delivery.objects.none()

    _recipient: Recipient | None = None

    def recipient(self) -> Recipient:
        if self._recipient is not None:
            return self._recipient
        asked = self.request.query_params.get("recipient") or (
            self.request.data.get("recipient") if isinstance(self.request.data, dict) else None
        )
        holder = recipient_of(self.request)
        if holder is not None:
            if asked and asked != holder.external_id:
                raise PermissionDenied("This token opens another recipient's inbox.", code="recipient_mismatch")
            self._recipient = holder
        elif not asked:
            raise ApplicationError(
                "Name the recipient (?recipient=<external_id>) when using an API key.",
                code="validation_error",
                fields={"recipient": ["Required with an API key."]},
            )
        else:
            self._recipient = get_object_or_404(Recipient, tenant=request_tenant(self.request), external_id=asked)
        return self._recipient

    def get_queryset(self) -> QuerySet[Delivery]:
        qs = inbox_services.inbox_queryset(recipient=self.recipient())
        if self.action != "list":
            return qs
        params = self.request.query_params
        archived = params.get("archived", "false").lower()
        if archived in ("false", "0"):
            qs = qs.filter(archived_at__isnull=True)
        elif archived in ("true", "1"):
            qs = qs.filter(archived_at__isnull=False)
        state = params.get("status", "all")
        if state == "unread":
            qs = qs.filter(read_at__isnull=True)
        elif state == "read":
            qs = qs.filter(read_at__isnull=False)
        return qs

    @extend_schema(
        summary="List inbox items, newest first (cursor pagination)",
        description="`next` and `previous` are cursors: new items arriving while a client pages neither "
        "repeat nor skip an item. `?limit=` sets the page size (default 50, at most 200).",
        parameters=[
            OpenApiParameter("status", str, enum=["all", "unread", "read"], description="Default all."),
            OpenApiParameter("archived", str, enum=["false", "true", "all"], description="Default false."),
        ],
        responses={200: serializers.InboxItemSerializer(many=True), 400: ERROR_RESPONSES[400]},
        examples=INBOX_LIST_EXAMPLES,
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="One inbox item")
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    def _changed(self, updated: int) -> Response:
        return Response({"updated": updated})

    @extend_schema(summary="Unread and unseen counts (badges)", responses={200: serializers.InboxCountsSerializer})
    @action(detail=False, methods=["get"], url_path="unread-count")
    def unread_count(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(inbox_services.inbox_counts(recipient=self.recipient()))

    @extend_schema(summary="Mark an item read", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def read(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_read(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Mark an item unread", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def unread(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_unread(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Archive an item", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_archive(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Unarchive an item", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def unarchive(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_unarchive(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Mark every item read", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_read(recipient=self.recipient()))

    @extend_schema(
        summary="Mark every item seen (clears the badge)",
        request=None,
        responses={200: serializers.InboxChangedSerializer},
    )
    @action(detail=False, methods=["post"], url_path="seen-all")
    def seen_all(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_seen(recipient=self.recipient()))
