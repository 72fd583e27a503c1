"""URLs of the notifications API (included under /api/v1/ by project/urls.py)."""

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.notifications.api.categories import CategoryViewSet
from apps.notifications.api.deliveries import DeliveryViewSet
from apps.notifications.api.devices import DeviceViewSet
from apps.notifications.api.imports import RecipientImportView
from apps.notifications.api.inbox import InboxViewSet
from apps.notifications.api.notifications import NotificationViewSet
from apps.notifications.api.preferences import DefaultPreferencesView
from apps.notifications.api.recipients import RecipientViewSet
from apps.notifications.api.templates import TemplateViewSet
from apps.notifications.api.topics import TopicViewSet
from apps.notifications.suppressions_api import SuppressionViewSet

router = SimpleRouter()
router.register("notifications", NotificationViewSet, basename="notification")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("recipients", RecipientViewSet, basename="recipient")
router.register("topics", TopicViewSet, basename="topic")
router.register("categories", CategoryViewSet, basename="category")
router.register("templates", TemplateViewSet, basename="template")
router.register("inbox", InboxViewSet, basename="inbox")
router.register("suppressions", SuppressionViewSet, basename="suppression")

devices = DeviceViewSet.as_view({"get": "list", "post": "create"})
device = DeviceViewSet.as_view({"delete": "destroy"})

urlpatterns: list[URLPattern | URLResolver] = [
    path("recipients/imports/", RecipientImportView.as_view(), name="recipient-imports"),
    path("preferences/defaults/", DefaultPreferencesView.as_view(), name="preferences-defaults"),
    path("recipients/<str:external_id>/devices/", devices, name="recipient-devices"),
    path("recipients/<str:external_id>/devices/<int:pk>/", device, name="recipient-device"),
    *router.urls,
]
