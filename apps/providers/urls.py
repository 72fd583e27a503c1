from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from apps.providers import api

router = SimpleRouter()
router.register("providers/configs", api.ProviderConfigViewSet, basename="provider-config")

urlpatterns: list[URLPattern | URLResolver] = [
    path("providers/", api.ProviderOverviewView.as_view(), name="providers"),
    *router.urls,
    path("providers/<str:ref>/test/", api.ProviderTestView.as_view(), name="provider-test"),
]
