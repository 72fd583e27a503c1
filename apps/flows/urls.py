from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.flows import api

router = SimpleRouter()
router.register("flows", api.FlowViewSet, basename="flow")

urlpatterns: list[URLPattern | URLResolver] = [
    *router.urls,
    path(
        "notifications/<uuid:notification_id>/flow/",
        api.NotificationFlowViewSet.as_view({"get": "summary"}),
        name="notification-flow",
    ),
    path(
        "notifications/<uuid:notification_id>/flow-runs/",
        api.FlowRunViewSet.as_view({"get": "list"}),
        name="notification-flow-runs",
    ),
]
