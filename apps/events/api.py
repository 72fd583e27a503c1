"""Events, rules and webhooks API (`events:write` for writes, `read` for reads).

GET/POST          /api/v1/events/[?status=dead]         record an event (202; Idempotency-Key) / list
GET               /api/v1/events/<id>/                  with its rule executions and webhook messages
POST              /api/v1/events/<id>/replay/           process a dead event again
POST              /api/v1/events/replay/                bulk replay of dead events
GET/POST          /api/v1/rules/                        rules
GET/PATCH/DELETE  /api/v1/rules/<id>/
GET               /api/v1/rules/<id>/executions/        the observer log of one rule
GET/POST          /api/v1/webhook-endpoints/            endpoints (the secret is in the POST answer only)
GET/PATCH/DELETE  /api/v1/webhook-endpoints/<id>/
POST              /api/v1/webhook-endpoints/<id>/rotate-secret/
GET               /api/v1/webhook-messages/[?status=failed&endpoint_id=…]
GET               /api/v1/webhook-messages/<id>/        with its attempts
POST              /api/v1/webhook-messages/<id>/replay/
POST              /api/v1/webhook-messages/replay/      bulk replay of dead messages
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import django_filters
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.idempotency import accepts_idempotency_key, idempotent, idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.events.models import Event, Rule, RuleExecution, Watcher, WebhookEndpoint, WebhookMessage
from apps.events.serializers import (
    BulkReplayResultSerializer,
    BulkReplaySerializer,
    EventBulkReplaySerializer,
    EventCreateSerializer,
    EventDetailSerializer,
    EventSerializer,
    RotateSecretSerializer,
    RuleExecutionSerializer,
    RuleSerializer,
    RuleWriteSerializer,
    WatcherCreateSerializer,
    WatcherSerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookMessageDetailSerializer,
    WebhookMessageSerializer,
)
from apps.events.services import rules, watchers, webhooks
from apps.events.services.events import event_record, event_replay, events_replay
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import Scope


@extend_schema_view(
    list=extend_schema(
        summary="Events, newest first (status=dead: the dead letters)",
        responses={200: EventSerializer(many=True)},
    ),
    retrieve=extend_schema(summary="One event, with what it caused", responses={200: EventDetailSerializer}),
)
class EventViewSet(TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Event]):
    queryset = Event.objects.order_by("-created_at")
    serializer_class = EventSerializer
    write_scope = Scope.EVENTS_WRITE
    filterset_fields = ["type", "subject_type", "subject_id", "status", "source"]

    def get_queryset(self) -> Any:
        found = super().get_queryset()
        if self.action == "retrieve":
            found = found.prefetch_related(
                Prefetch("rule_executions", queryset=RuleExecution.objects.select_related("rule")), "webhook_messages"
            )
        return found

    def get_serializer_class(self) -> Any:
        return EventDetailSerializer if self.action == "retrieve" else EventSerializer

    @extend_schema(
        summary="Record a domain event (processed on the events queue)",
        description="Types under Signalbox's namespaces (transition., task., notification., …) are refused: "
        "422 `reserved_event_type`. An optional `actor` `{type, id}` names who did it (422 `invalid_actor`); "
        "the event's `actor.recorded_by` is always the calling key. Supports Idempotency-Key.",
        request=EventCreateSerializer,
        responses={202: EventSerializer},
    )
    @accepts_idempotency_key("events.event")
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = EventCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)

        def create() -> tuple[Response, str]:
            event = event_record(
                tenant=request_tenant(request),
                type=body.validated_data["type"],
                subject=body.validated_data.get("subject"),
                payload=body.validated_data["payload"],
                actor=body.validated_data.get("actor"),
                recorded_by=actor_from_request(request),
            )
            return Response(EventSerializer(event).data, status=status.HTTP_202_ACCEPTED), str(event.pk)

        return idempotent(request, scope="events.event", create=create)

    @extend_schema(
        summary="Process a dead event again (its retry schedule restarted)",
        description="409 `not_replayable` unless the event is dead (e.g. already replayed).",
        request=None,
        responses={202: EventSerializer},
    )
    @action(detail=True, methods=["post"])
    @idempotent_create("events.event.replay")
    def replay(self, request: Request, **kwargs: Any) -> Response:
        event = event_replay(event=self.get_object(), actor=actor_from_request(request))
        return Response(EventSerializer(event).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="events_replay_bulk",
        summary="Replay dead events in bulk (by id, type pattern or since a time; at most 1000)",
        request=EventBulkReplaySerializer,
        responses={202: BulkReplayResultSerializer},
    )
    @action(detail=False, methods=["post"], url_path="replay")
    @idempotent_create("events.event.replay_bulk")
    def replay_bulk(self, request: Request, **kwargs: Any) -> Response:
        body = EventBulkReplaySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        replayed = events_replay(  # scoped to the tenant: another tenant's ids match nothing
            tenant=request_tenant(request),
            ids=body.validated_data.get("ids"),
            type=body.validated_data.get("type"),
            since=body.validated_data.get("since"),
            actor=actor_from_request(request),
        )
        return Response(
            {"replayed": len(replayed), "ids": [str(pk) for pk in replayed]}, status=status.HTTP_202_ACCEPTED
        )


@extend_schema_view(
    list=extend_schema(summary="Rules", responses={200: RuleSerializer(many=True)}),
    retrieve=extend_schema(summary="One rule", responses={200: RuleSerializer}),
)
class RuleViewSet(TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Rule]):
    queryset = Rule.objects.order_by("name", "created_at")
    serializer_class = RuleSerializer
    write_scope = Scope.EVENTS_WRITE
    filterset_fields = ["event_type", "enabled"]

    @extend_schema(summary="Create a rule", request=RuleWriteSerializer, responses={201: RuleSerializer})
    @idempotent_create("events.rule")
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = RuleWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rule = rules.rule_create(
            tenant=request_tenant(request), actor=actor_from_request(request), **body.validated_data
        )
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Change a rule", request=RuleWriteSerializer, responses={200: RuleSerializer})
    def partial_update(self, request: Request, **kwargs: Any) -> Response:
        body = RuleWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        changes = {k: v for k, v in body.validated_data.items() if k in request.data}
        rule = rules.rule_update(rule=self.get_object(), actor=actor_from_request(request), **changes)
        return Response(RuleSerializer(rule).data)

    @extend_schema(summary="Delete a rule", responses={204: None})
    def destroy(self, request: Request, **kwargs: Any) -> Response:
        rules.rule_delete(rule=self.get_object(), actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="The rule's executions, newest first",
        responses={200: RuleExecutionSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def executions(self, request: Request, **kwargs: Any) -> Response:
        rule = self.get_object()
        page = self.paginate_queryset(cast(Any, rule.executions.select_related("rule").order_by("-created_at", "-id")))
        return self.get_paginated_response(RuleExecutionSerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(
        summary="Watchers (filter by subject_type and subject_id)",
        responses={200: WatcherSerializer(many=True)},
    ),
    retrieve=extend_schema(summary="One watcher", responses={200: WatcherSerializer}),
)
class WatcherViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Watcher]
):
    """Recipients following a subject; notification actions and effects with `watchers: true` reach them."""

    queryset = Watcher.objects.order_by("created_at", "id")
    serializer_class = WatcherSerializer
    write_scope = Scope.EVENTS_WRITE
    filterset_fields = ["subject_type", "subject_id", "recipient"]

    @extend_schema(
        summary="Make a recipient watch a subject",
        request=WatcherCreateSerializer,
        responses={201: WatcherSerializer},
    )
    @idempotent_create("events.watcher")
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = WatcherCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        watcher = watchers.watcher_add(
            tenant=request_tenant(request),
            subject=body.validated_data["subject"],
            recipient=body.validated_data["recipient"],
        )
        return Response(WatcherSerializer(watcher).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Stop watching", responses={204: None})
    def destroy(self, request: Request, **kwargs: Any) -> Response:
        watchers.watcher_remove(watcher=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="Webhook endpoints", responses={200: WebhookEndpointSerializer(many=True)}),
    retrieve=extend_schema(
        summary="One webhook endpoint (never its secret)", responses={200: WebhookEndpointSerializer}
    ),
)
class WebhookEndpointViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[WebhookEndpoint]
):
    queryset = WebhookEndpoint.objects.order_by("-created_at")
    serializer_class = WebhookEndpointSerializer
    write_scope = Scope.EVENTS_WRITE
    filterset_fields = ["enabled"]

    @extend_schema(
        summary="Register an endpoint; the answer holds its signing secret, shown this once",
        description="422 `unsafe_url` for addresses Signalbox does not call (private, loopback, link-local…).",
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointWithSecretSerializer},
    )
    @idempotent_create("events.webhook_endpoint", sealed=True)
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = WebhookEndpointCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        endpoint, secret = webhooks.endpoint_create(
            tenant=request_tenant(request), actor=actor_from_request(request), secret=data.pop("secret") or None, **data
        )
        return Response({**WebhookEndpointSerializer(endpoint).data, "secret": secret}, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change an endpoint (enabled=true re-enables a disabled one)",
        request=WebhookEndpointUpdateSerializer,
        responses={200: WebhookEndpointSerializer},
    )
    def partial_update(self, request: Request, **kwargs: Any) -> Response:
        body = WebhookEndpointUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        endpoint = webhooks.endpoint_update(
            endpoint=self.get_object(), actor=actor_from_request(request), **body.validated_data
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(summary="Delete an endpoint and its messages", responses={204: None})
    def destroy(self, request: Request, **kwargs: Any) -> Response:
        webhooks.endpoint_delete(endpoint=self.get_object(), actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Rotate the signing secret; the old one keeps signing alongside for the overlap",
        request=RotateSecretSerializer,
        responses={200: WebhookEndpointWithSecretSerializer},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, **kwargs: Any) -> Response:
        body = RotateSecretSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        overlap = body.validated_data.get("overlap_seconds")
        endpoint, secret = webhooks.endpoint_rotate_secret(
            endpoint=self.get_object(),
            overlap=timedelta(seconds=overlap) if overlap is not None else None,
            secret=body.validated_data["secret"] or None,
            actor=actor_from_request(request),
        )
        return Response({**WebhookEndpointSerializer(endpoint).data, "secret": secret})


class WebhookMessageFilter(django_filters.FilterSet):
    # By id, not by object: an id of no endpoint or event (or another tenant's) matches nothing, an empty
    # list, where django-filter's model choice would answer 400 and tell a foreign id from a missing one.
    endpoint_id = django_filters.UUIDFilter(field_name="endpoint_id")
    event_id = django_filters.UUIDFilter(field_name="event_id")

    class Meta:
        model = WebhookMessage
        fields = ["status", "endpoint_id", "event_type", "event_id"]


@extend_schema_view(
    list=extend_schema(
        summary="Webhook messages (status=failed: the dead ones)",
        responses={200: WebhookMessageSerializer(many=True)},
    ),
    retrieve=extend_schema(summary="One message with its attempts", responses={200: WebhookMessageDetailSerializer}),
)
class WebhookMessageViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[WebhookMessage]
):
    queryset = WebhookMessage.objects.order_by("-created_at")
    serializer_class = WebhookMessageSerializer
    write_scope = Scope.EVENTS_WRITE
    filterset_class = WebhookMessageFilter

    def get_serializer_class(self) -> Any:
        return WebhookMessageDetailSerializer if self.action == "retrieve" else WebhookMessageSerializer

    @extend_schema(
        summary="Send a dead (or delivered) message again, same webhook-id",
        request=None,
        responses={202: WebhookMessageSerializer},
    )
    @action(detail=True, methods=["post"])
    @idempotent_create("events.webhook_message.replay")
    def replay(self, request: Request, **kwargs: Any) -> Response:
        message = webhooks.message_replay(message=self.get_object(), actor=actor_from_request(request))
        return Response(WebhookMessageSerializer(message).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="webhook_messages_replay_bulk",
        summary="Replay dead messages in bulk (of an endpoint, since a time, or by id; at most 1000)",
        request=BulkReplaySerializer,
        responses={202: BulkReplayResultSerializer},
    )
    @action(detail=False, methods=["post"], url_path="replay")
    @idempotent_create("events.webhook_message.replay_bulk")
    def replay_bulk(self, request: Request, **kwargs: Any) -> Response:
        body = BulkReplaySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        replayed = webhooks.messages_replay(  # scoped to the tenant: another tenant's ids match nothing
            tenant=request_tenant(request),
            endpoint_id=body.validated_data.get("endpoint_id"),
            since=body.validated_data.get("since"),
            ids=body.validated_data.get("ids"),
            actor=actor_from_request(request),
        )
        return Response(
            {"replayed": len(replayed), "ids": [str(pk) for pk in replayed]}, status=status.HTTP_202_ACCEPTED
        )
