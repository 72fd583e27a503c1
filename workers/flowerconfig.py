"""Flower's settings: `celery -A workers.celery flower --conf=workers/flowerconfig.py`.

Flower reads this file as Python; module-level names are its options. Every `FLOWER_<OPTION>`
environment variable works too (e.g. `FLOWER_BASIC_AUTH=ops:secret`, several comma-separated).

- Production (DEBUG off) refuses to start without authentication: basic auth (`FLOWER_BASIC_AUTH`)
  or OAuth (`FLOWER_AUTH` = allowed-emails regex, `FLOWER_AUTH_PROVIDER`, `FLOWER_OAUTH2_KEY`,
  `FLOWER_OAUTH2_SECRET`, `FLOWER_OAUTH2_REDIRECT_URI`). Flower can revoke and terminate tasks and
  shows task arguments: it is an admin tool.
- Its task history is persistent (`FLOWER_DB`, a shelve file on a volume), saved every minute and at
  exit, so a restart does not forget what ran; offline workers (old pods) are dropped after 10 minutes.
- `FLOWER_URL_PREFIX` serves it under a path (e.g. `/flower` behind the API's ingress).
"""

import os

_debug = os.environ.get("DEBUG", "").lower() in ("1", "true", "yes", "on")
_has_auth = bool(os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH"))
if not _debug and not _has_auth:
    raise SystemExit(
        "Flower will not start unauthenticated in production: set FLOWER_BASIC_AUTH=user:password "
        "or FLOWER_AUTH with FLOWER_AUTH_PROVIDER and FLOWER_OAUTH2_* (docs/operations.md, 'Flower')."
    )
if os.environ.get("FLOWER_AUTH") and not os.environ.get("FLOWER_AUTH_PROVIDER"):
    raise SystemExit("FLOWER_AUTH is set but FLOWER_AUTH_PROVIDER is not (e.g. flower.views.auth.GithubLoginHandler).")

persistent = os.environ.get("FLOWER_PERSISTENT", "true").lower() in ("1", "true", "yes", "on")
db = os.environ.get("FLOWER_DB") or os.path.join(os.environ.get("SIGNALBOX_DATA_DIR", "data"), "flower.db")
state_save_interval = int(os.environ.get("FLOWER_STATE_SAVE_INTERVAL", "60000"))  # milliseconds
max_tasks = int(os.environ.get("FLOWER_MAX_TASKS", "20000"))
purge_offline_workers = int(os.environ.get("FLOWER_PURGE_OFFLINE_WORKERS", "600"))  # seconds
# Behind a proxy or ingress: trust X-Forwarded-* for redirects and the OAuth callback.
xheaders = not _debug
