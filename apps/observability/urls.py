from django.urls import URLPattern, URLResolver
from rest_framework.routers import SimpleRouter

from apps.observability import api

router = SimpleRouter()
router.register("audit", api.AuditEntryViewSet, basename="audit-entry")

urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
