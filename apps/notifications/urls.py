"""URLs of the notifications API (included under /api/v1/ by project/urls.py)."""

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.notifications import api, imports_api, suppressions_api

router = SimpleRouter()
router.register("notifications", api.NotificationViewSet, basename="notification")
router.register("deliveries", api.DeliveryViewSet, basename="delivery")
router.register("recipients", api.RecipientViewSet, basename="recipient")
router.register("topics", api.TopicViewSet, basename="topic")
router.register("categories", api.CategoryViewSet, basename="category")
router.register("templates", api.TemplateViewSet, basename="template")
router.register("inbox", api.InboxViewSet, basename="inbox")
router.register("suppressions", suppressions_api.SuppressionViewSet, basename="suppression")

devices = api.DeviceViewSet.as_view({"get": "list", "post": "create"})
device = api.DeviceViewSet.as_view({"delete": "destroy"})

urlpatterns: list[URLPattern | URLResolver] = [
    path("recipients/imports/", imports_api.RecipientImportView.as_view(), name="recipient-imports"),
    path("preferences/defaults/", api.DefaultPreferencesView.as_view(), name="preferences-defaults"),
    path("recipients/<str:external_id>/devices/", devices, name="recipient-devices"),
    path("recipients/<str:external_id>/devices/<int:pk>/", device, name="recipient-device"),
    *router.urls,
]
