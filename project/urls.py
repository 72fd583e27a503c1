"""URL map: the versioned API under /api/v1/, the schema and docs, admin, probes and metrics, and the
public links inside messages (tracking, unsubscribe)."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.core import views as core_views

# Django tries these in order, pattern by pattern: the polled task routes first (behind the 42
# notification patterns, resolving a poll cost as much Python as the ceiling's whole request).
# No app's paths overlap another's, so the order changes nothing else.
api_v1 = [
    path("", include("apps.tasks.urls")),
    path("", include("apps.tenancy.urls")),
    path("", include("apps.notifications.urls")),
    path("", include("apps.providers.urls")),
    path("", include("apps.workflows.urls")),
    path("", include("apps.events.urls")),
    path("", include("apps.flows.urls")),
    path("", include("apps.observability.urls")),
    path("", include("apps.realtime.urls")),
]

urlpatterns = [
    # First: the API is where the traffic is, and Django tries patterns in order. Nothing else starts with
    # api/<one segment>/ except the schema and docs below, which no API pattern matches (no router here
    # has a root view), so they still fall through to their own.
    path("api/<str:version>/", include(api_v1)),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("", include("django_prometheus.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI and ReDoc from local static files (drf-spectacular-sidecar): they work offline.
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    # Last under /api/: what no view claims answers a JSON 404 (the error shape), never Django's HTML page.
    # Only paths ending in "/", so APPEND_SLASH still redirects `/api/v1/notifications` to its view.
    re_path(r"^api/.*/$", core_views.api_not_found),
    path("", include("apps.notifications.public_urls")),
    path("", include("apps.portal.urls")),
]
