"""Django settings of the peer run (bench/fanout/peer.py): django-notifications-hq and what it
needs, nothing of Signalbox (its app label `notifications` is also ours)."""

from __future__ import annotations

import os

host, port, user = os.environ.get("PEER_PG", "127.0.0.1:5432:postgres").split(":")
SECRET_KEY = "bench-peer-only-secret-key-do-not-deploy-7c1d"  # noqa: S105 (a throwaway benchmark database)
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "notifications"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PEER_DATABASE", "signalbox_bench_peer"),
        "HOST": host,
        "PORT": port,
        "USER": user,
        "CONN_MAX_AGE": 600,
        # The pipeline's chunks commit without waiting for their WAL flush (a lost chunk is re-run);
        # the peer gets the same, so the comparison is not won on fsyncs.
        "OPTIONS": {"options": "-c synchronous_commit=off"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DJANGO_NOTIFICATIONS_CONFIG = {"USE_JSONFIELD": True}  # extra data (the action URL) stored with each row
