"""Deprecating an endpoint: the headers on the deprecated path and method only, and the note in the schema.

A test-only view stands in for a real endpoint: GET /api/v1/legacy-widgets/ is deprecated, POST on the
same path and GET on its detail path (the same view class) are not.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from apps.core.deprecation import deprecated

Widget = inline_serializer(name="LegacyWidget", fields={"key": serializers.CharField()})


@deprecated(
    path="/api/v1/legacy-widgets/",
    method="get",
    since="2026-01-15",
    sunset="2026-07-31",
    note="Use /api/v1/widgets/.",
    link="https://signalbox.example.com/docs/changes#widgets",
)
class LegacyWidgetView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    @extend_schema(responses={200: Widget})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"key": kwargs.get("key", "all")})

    @extend_schema(request=Widget, responses={201: Widget})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response({"key": "new"}, status=201)


urlpatterns = [
    path("api/<str:version>/legacy-widgets/", LegacyWidgetView.as_view()),
    path("api/<str:version>/legacy-widgets/<str:key>/", LegacyWidgetView.as_view()),
]

pytestmark = pytest.mark.urls(__name__)

DEPRECATION_HEADERS = ("Deprecation", "Sunset", "Link")


def test_the_deprecated_method_answers_with_deprecation_and_sunset_headers():
    response = APIClient().get("/api/v1/legacy-widgets/")

    assert response.status_code == 200
    assert response["Deprecation"] == "@1768435200"  # 2026-01-15T00:00:00Z
    assert response["Sunset"] == "Fri, 31 Jul 2026 00:00:00 GMT"
    assert response["Link"] == '<https://signalbox.example.com/docs/changes#widgets>; rel="deprecation"'


def test_other_methods_and_paths_of_the_same_view_are_not_marked():
    created = APIClient().post("/api/v1/legacy-widgets/", {"key": "x"}, format="json")
    detail = APIClient().get("/api/v1/legacy-widgets/w-1/")

    assert (created.status_code, detail.status_code) == (201, 200)
    for response in (created, detail):
        assert not [name for name in DEPRECATION_HEADERS if name in response]


def test_the_schema_marks_only_the_deprecated_operation():
    schema = SchemaGenerator(patterns=urlpatterns).get_schema(request=None, public=True)

    listing = schema["paths"]["/api/v1/legacy-widgets/"]
    assert listing["get"]["deprecated"] is True
    assert "**Deprecated**: Use /api/v1/widgets/. Sunset on 2026-07-31." in listing["get"]["description"]
    assert "deprecated" not in listing["post"]
    assert "deprecated" not in schema["paths"]["/api/v1/legacy-widgets/{key}/"]["get"]


def test_a_sunset_before_the_deprecation_is_refused_at_import():
    with pytest.raises(ValueError, match="must come after"):
        deprecated(path="/api/v1/x/", since="2026-07-31", sunset="2026-01-15", note="Gone.")
