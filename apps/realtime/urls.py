from django.urls import URLPattern, URLResolver, path

from apps.realtime import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("realtime/schema/", api.RealtimeSchemaView.as_view(), name="realtime-schema"),
]
