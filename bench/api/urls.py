"""The API's own URLs, plus the ceiling's bare views under /bench/."""

from django.urls import path

from bench.api.ceiling import Bare, BareRow
from project.urls import urlpatterns as api

urlpatterns = [path("bench/bare/", Bare.as_view()), path("bench/bare/<int:pk>/", BareRow.as_view()), *api]
