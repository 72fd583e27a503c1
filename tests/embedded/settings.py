"""Settings for the embedded-default suite (tests/embedded): what `make run` runs on, not PostgreSQL.

No DATABASE_URL, so project.settings takes its SQLite branch (WAL, busy timeout, IMMEDIATE
transactions) under a temporary SIGNALBOX_DATA_DIR; the test database is a file there (an
in-memory one could not be in WAL mode nor shared between threads). The broker and the counters'
Redis are a redis-server of this run on a free port (conftest.py starts it), never the machine's
6379.
"""

import os
import socket
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The controller process picks these once; anything it starts inherits them.
RUN_DIR = Path(os.environ.setdefault("SIGNALBOX_EMBEDDED_TEST_DIR", tempfile.mkdtemp(prefix="sbx-embedded-")))
EMBEDDED_REDIS_PORT = int(os.environ.setdefault("SIGNALBOX_EMBEDDED_TEST_REDIS_PORT", str(_free_port())))

for _name in ("DATABASE_URL", "SIGNALBOX_REDIS_URL", "SIGNALBOX_REALTIME_REDIS_URL", "CELERY_BROKER_KEYPREFIX"):
    os.environ.pop(_name, None)
os.environ["SIGNALBOX_DATA_DIR"] = str(RUN_DIR / "data")
os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("LOG_FORMAT", "console")
# External channels go to the sink: no provider sandbox is needed below the end-to-end test.
os.environ["SIGNALBOX_SANDBOX_URL"] = ""

from project.settings import *  # noqa: E402,F403
from project.settings import DATABASES  # noqa: E402

DATABASES["default"]["TEST"] = {"NAME": str(RUN_DIR / "test.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = RUN_DIR / "media"
