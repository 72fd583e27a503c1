"""Signalbox's Django project: settings, URLs and the ASGI/WSGI entry points."""

from workers.celery import app as celery_app

__all__ = ("celery_app",)
