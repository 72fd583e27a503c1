"""Settings for the test suite: the real PostgreSQL and Redis on 127.0.0.1, isolated per run.

Each pytest run (and each xdist worker in it) gets its own database and its own broker key
prefix, so concurrent runs on one machine never see each other's rows or messages.
"""

import os
import uuid

os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/signalbox")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
RUN_ID = os.environ.setdefault("SIGNALBOX_TEST_RUN", uuid.uuid4().hex[:8])
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
if "PYTEST_XDIST_WORKER" in os.environ:
    # xdist workers inherit the controller's environment, its "main" prefix included: each sets its
    # own, or their Celery workers (each on its own database) would take each other's messages.
    os.environ["CELERY_BROKER_KEYPREFIX"] = f"sbxtest:{RUN_ID}:{_WORKER}:"
else:
    os.environ.setdefault("CELERY_BROKER_KEYPREFIX", f"sbxtest:{RUN_ID}:{_WORKER}:")
os.environ.setdefault("LOG_FORMAT", "console")
# Webhook tests post to receivers on 127.0.0.1; the SSRF refusal is tested with this turned off.
os.environ.setdefault("SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE", "1")
# No provider defaults to the development sandbox on 127.0.0.1:8025: external channels use the sink
# unless a test configures a provider (tests/providers points them at a sandbox of its own).
os.environ.setdefault("SIGNALBOX_SANDBOX_URL", "")
# A lost answer waits this long for the provider's callback before its retry (600 s in production).
os.environ.setdefault("SIGNALBOX_RECONCILE_WINDOW_SECONDS", "1")

from project.settings import *  # noqa: E402,F403
from project.settings import DATA_DIR, DATABASES  # noqa: E402

DATABASES["default"]["TEST"] = {"NAME": f"test_sbx_{RUN_ID}"}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = DATA_DIR / "test-media" / RUN_ID / _WORKER
