from django.urls import URLPattern, URLResolver
from rest_framework.routers import SimpleRouter

from apps.events import api

router = SimpleRouter()
router.register("events", api.EventViewSet, basename="event")
router.register("rules", api.RuleViewSet, basename="rule")
router.register("watchers", api.WatcherViewSet, basename="watcher")
router.register("webhook-endpoints", api.WebhookEndpointViewSet, basename="webhook-endpoint")
router.register("webhook-messages", api.WebhookMessageViewSet, basename="webhook-message")

urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
