"""The recipient's pages outside /api/v1: the hosted preference page and the inbox demo."""

from django.urls import path

from apps.portal import views

urlpatterns = [
    path("preferences/<str:token>/", views.preferences_page, name="portal-preferences"),
    path("inbox/demo/", views.inbox_demo, name="portal-inbox-demo"),
]
