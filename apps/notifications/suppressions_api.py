"""The suppression list over the API: the addresses not sent to, and allowing one again.

    GET     /api/v1/suppressions/        the addresses not sent to (`read`)
    DELETE  /api/v1/suppressions/<id>/   allow an address again (`notifications:write`)

The list is fed by permanent send errors and provider callbacks (services/suppressions.py).
"""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets

from apps.core.tenancy import TenantScopedMixin
from apps.notifications.models import Suppression
from apps.notifications.services.suppressions import normalize, suppression_delete
from apps.providers.base import Channel
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import Scope


class SuppressionSerializer(serializers.ModelSerializer[Suppression]):
    class Meta:
        model = Suppression
        fields = ["id", "channel", "address", "reason", "source", "detail", "delivery_id", "created_at"]
        read_only_fields = fields


class SuppressionFilter(django_filters.FilterSet):
    channel = django_filters.ChoiceFilter(choices=Suppression._meta.get_field("channel").choices)
    reason = django_filters.MultipleChoiceFilter(choices=Suppression.Reason.choices)
    address = django_filters.CharFilter(
        method="filter_address", help_text="The exact address (emails match in any case)."
    )

    class Meta:
        model = Suppression
        fields = ["channel", "reason", "address"]

    def filter_address(self, queryset: Any, name: str, value: str) -> Any:
        # Stored normalised (emails lower-cased); exact matches keep the unique index usable.
        return queryset.filter(address__in={value.strip(), normalize(Channel.EMAIL, value)})


@extend_schema_view(
    list=extend_schema(
        summary="The suppression list: addresses not sent to",
        description="Addresses a provider refused for good (hard bounce, spam report, SMS STOP, invalid "
        "number, a 410 from a webhook or chat endpoint), newest first. Deliveries to them are suppressed "
        "(`suppressed_address`).",
        responses={200: SuppressionSerializer(many=True)},
    ),
    destroy=extend_schema(
        summary="Allow a suppressed address again",
        description="Deletes the entry (audited); later notifications and sends go to the address again.",
        responses={204: None},
    ),
)
class SuppressionViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet[Suppression]
):
    queryset = Suppression.objects.order_by("-created_at", "-id")
    serializer_class = SuppressionSerializer
    filterset_class = SuppressionFilter
    write_scope = Scope.NOTIFICATIONS_WRITE
    lookup_value_regex = r"[0-9]+"

    def perform_destroy(self, instance: Suppression) -> None:
        suppression_delete(suppression=instance, actor=actor_from_request(self.request))
