from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.tenancy import api

router = SimpleRouter()
router.register("api-keys", api.ApiKeyViewSet, basename="api-key")

urlpatterns = [path("tenant/", api.CurrentTenantView.as_view(), name="current-tenant"), *router.urls]
