"""Public endpoints outside /api/v1: links in emails and provider callbacks; see public.py."""

from django.urls import URLPattern, path, re_path

from apps.notifications import public

urlpatterns: list[URLPattern] = [
    re_path(r"^t/o/(?P<token>[^/]+)\.gif$", public.open_pixel, name="tracking-open"),
    path("t/c/<str:token>", public.click, name="tracking-click"),
    path("u/<str:token>", public.unsubscribe, name="unsubscribe"),
    path("callbacks/twilio/status", public.twilio_status, name="twilio-status-callback"),
    path("callbacks/sendgrid/events", public.sendgrid_events, name="sendgrid-events-callback"),
]
