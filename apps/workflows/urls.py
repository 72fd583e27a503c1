from django.urls import URLPattern, URLResolver
from rest_framework.routers import SimpleRouter

from apps.workflows import api

router = SimpleRouter()
router.register("workflows", api.WorkflowDefinitionViewSet, basename="workflow")
router.register(
    rf"workflows/(?P<key>{api.KEY_REGEX})/instances", api.WorkflowInstanceViewSet, basename="workflow-instance"
)
router.register("transition-intents", api.TransitionIntentViewSet, basename="transition-intent")

urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
