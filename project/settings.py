"""Settings, read from the environment (12-factor).

Every setting that differs between machines comes from an environment variable, documented
in README.md ("Configuration"). With nothing set, Signalbox runs on the embedded default:
SQLite in WAL mode and a local Redis under `./data`. Bad or missing production values raise
`ImproperlyConfigured` at start rather than at the first request.
"""

from __future__ import annotations

import os
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from project import production as _production
from project import sandbox_defaults as _sandbox_defaults
from project.logging import logging_config
from project.version import __version__

# Lets the code write `admin.ModelAdmin[Model]`, `QuerySet[Model]` for mypy at run time too.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SIGNALBOX_DATA_DIR", BASE_DIR / "data"))

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# The release (pyproject.toml's version, project/version.py): /healthz reports it.
SIGNALBOX_VERSION = __version__
_INSECURE_DEV_KEY = "insecure-dev-key-only-for-the-embedded-default-do-not-deploy"
# Empty counts as unset (docker compose passes `SECRET_KEY: ${SECRET_KEY:-}` through as "").
SECRET_KEY = env.str("SECRET_KEY", default="") or (_INSECURE_DEV_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (it signs tokens and encrypts secrets).")
if not DEBUG and SECRET_KEY == _INSECURE_DEV_KEY:
    raise ImproperlyConfigured("SECRET_KEY is the development key: set a real one for production.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The public base URL of the API, used in links Signalbox sends out (unsubscribe, tracking, callbacks).
PUBLIC_URL = env.str("SIGNALBOX_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as local static files (no CDN: works air-gapped)
    "django_celery_beat",
    "django_celery_results",
    "django_prometheus",
    "corsheaders",
    "apps.core",
    "apps.tenancy",
    "apps.observability",
    "apps.notifications",
    "apps.providers",
    "apps.tasks",
    "apps.workflows",
    "apps.events",
    "apps.flows",
    "channels",  # the realtime process (apps/realtime, docs/realtime.md)
    "apps.realtime",
    "apps.portal",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.RequestLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.middleware.DatabaseUnavailableMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Browser front ends on these origins may call the in-app inbox (`Authorization: Recipient …`):
# CORS for /api/v1/inbox/ only, no cookies. Every other endpoint is for back ends and stays closed.
CORS_ALLOWED_ORIGINS = env.list("SIGNALBOX_INBOX_ALLOWED_ORIGINS", default=[])
# The recipient's own preferences too (`<signalbox-preferences>`); each tenant may add origins of its
# own in `settings["inbox"]["allowed_origins"]` (apps/portal/cors.py, docs/inbox.md).
CORS_URLS_REGEX = r"^/api/v1/(inbox/|recipients/[^/]+/preferences/$)"
CORS_ALLOW_CREDENTIALS = False
CORS_EXPOSE_HEADERS = ["X-Request-ID"]
# The hosted preference page's signed link (in every email footer) works this long (docs/inbox.md).
SIGNALBOX_PREFERENCES_LINK_MAX_AGE_DAYS = env.float("SIGNALBOX_PREFERENCES_LINK_MAX_AGE_DAYS", default=60.0)
# /inbox/demo/ (the components for `make run`'s demo recipient): on with DEBUG, or with this.
SIGNALBOX_INBOX_DEMO = env.bool("SIGNALBOX_INBOX_DEMO", default=False)
SIGNALBOX_INBOX_DEMO_TENANT = env.str("SIGNALBOX_INBOX_DEMO_TENANT", default="demo")
SIGNALBOX_INBOX_DEMO_RECIPIENT = env.str("SIGNALBOX_INBOX_DEMO_RECIPIENT", default="ada")
SIGNALBOX_INBOX_DEMO_STREAM_URL = env.str("SIGNALBOX_INBOX_DEMO_STREAM_URL", default="")

# --- Database -------------------------------------------------------------------------------
# Connections are kept open between requests and between Celery tasks (see workers/celery.py):
# reconnecting per task made one-row tasks 2.2x slower and the API 4x slower.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'signalbox.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # WAL + a busy timeout let the API, the workers and beat share one file without
    # "database is locked"; IMMEDIATE makes writers queue on the lock instead of failing on upgrade.
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # Preference's "one default per category" rule needs NULLS NOT DISTINCT (PostgreSQL 15); on the
    # embedded SQLite the service's get-or-update keeps it instead.
    SILENCED_SYSTEM_CHECKS = ["models.W047"]
else:
    _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=300)
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {})
    _db["OPTIONS"].setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5))
# DATABASE_POOLER=pgbouncer: DATABASE_URL points at PgBouncer in transaction mode (docs/operations.md,
# "Connection budget"), where consecutive transactions may use different server connections: no
# server-side cursors (they outlive a transaction) and no prepared statements (psycopg prepares a query
# run 5 times). Migrations need a direct connection (manage.py migrate_and_schedule says so).
DATABASE_POOLER = env.str("DATABASE_POOLER", default="")
if DATABASE_POOLER not in ("", "pgbouncer"):
    raise ImproperlyConfigured("DATABASE_POOLER must be empty or 'pgbouncer'.")
if DATABASE_POOLER == "pgbouncer" and _db["ENGINE"] != "django.db.backends.sqlite3":
    _db["DISABLE_SERVER_SIDE_CURSORS"] = True
    _db["OPTIONS"]["prepare_threshold"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django 6's default for forms.URLField (admin forms): a URL typed without a scheme is https.
FORMS_URLFIELD_ASSUME_HTTPS = True

# The cache (Django's): CACHE_URL, e.g. redis://redis:6379/1 (Django's RedisCache), so the API's per-key
# request rate limit holds across processes and hosts; without it each process counts on its own, so
# with DEBUG off a per-process cache is refused at start (project/production.py).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
# Proxies (CIDRs, comma-separated) whose X-Forwarded-For is believed: the client is the right-most
# address not in this list. Empty (the default): X-Forwarded-For is ignored and the client is the
# connecting address. Rate limits key on it (apps/tenancy/throttling.py; docs/security.md).
SIGNALBOX_TRUSTED_PROXIES = env.list("SIGNALBOX_TRUSTED_PROXIES", default=[])  # checked: apps/tenancy/conf.py

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
MEDIA_URL = "media/"
# The admin's and API docs' static files are served by the app itself (WhiteNoise), compressed and
# cache-busted, so a deployment needs no separate static server.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Security (production passes `manage.py check --deploy`) --------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.tenancy.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps.tenancy.permissions.HasTenant"],
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.URLPathVersioning",
    "DEFAULT_VERSION": "v1",
    "ALLOWED_VERSIONS": ["v1"],
    "DEFAULT_FILTER_BACKENDS": ["apps.core.filters.FilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.DefaultPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["apps.tenancy.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_RATE_LIMIT", default="6000/min")},
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # Refuse hostile input (depth, NUL, surrogates, NaN) with 400 before a view sees it: apps/core/parsers.py.
    # The API speaks JSON only, both ways, so the schema documents exactly that: another request body type
    # answers 415, an Accept the API cannot meet answers 406, both in the JSON error shape.
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
# Input limits (docs/architecture.md, "Errors"). A larger body answers 413 `too_large`; 8 MiB holds a
# bulk upsert of 10,000 recipients (~3 MB with typical fields) with room to spare.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=8 * 1024 * 1024)
API_JSON_MAX_DEPTH = env.int("API_JSON_MAX_DEPTH", default=64)
# POST /api/v1/recipients/imports/ streams its body to disk chunk by chunk (never into memory), so it
# has a limit of its own: 1 GiB holds about 10 million NDJSON recipients.
SIGNALBOX_IMPORT_MAX_BYTES = env.int("SIGNALBOX_IMPORT_MAX_BYTES", default=1024 * 1024 * 1024)

# An `Idempotency-Key` answers the same request again for this long (a Django setting only, no variable).
IDEMPOTENCY_TTL_HOURS = 24

SPECTACULAR_SETTINGS = {
    "TITLE": "Signalbox API",
    "DESCRIPTION": (
        "Record intents (notifications, tasks, transitions, events); Celery queues carry them out. "
        "Authenticate with `Authorization: Bearer sbx_…`. Errors share one shape: "
        "`{code, message, fields}`. Live streams (WebSocket and Server-Sent Events, served by the "
        "realtime process): their messages are described by the JSON Schema at "
        "`GET /api/v1/realtime/schema/`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ and /api/redoc/ load their JavaScript from our static files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]",
    "COMPONENT_SPLIT_REQUEST": True,
    # Stable names for choice sets that several serializers share, or that share a field name.
    "ENUM_NAME_OVERRIDES": {
        "TaskExecutionStatusEnum": "apps.tasks.models.Status.choices",
        "NotificationStatusEnum": "apps.notifications.models.Notification.Status",
        "DeliveryStatusEnum": "apps.notifications.models.Delivery.Status",
        "ChannelEnum": "apps.notifications.models.CHANNEL_CHOICES",
        "EventStatusEnum": "apps.events.models.EventStatus",
        "WebhookMessageStatusEnum": "apps.events.models.MessageStatus",
        "KindEnum": "apps.tasks.models.Kind",  # a task execution's; a schedule's `kind` is an enum too
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.schema.postprocess_schema",
    ],
}

# --- Celery (workers/celery.py reads every CELERY_* setting) ----------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6390/0")
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES", default=7 * 24 * 3600)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
CELERY_TASK_TRACK_STARTED = True
# Off: the "task-sent" event was a Redis PUBLISH and ~1,000 function calls on every publish, a tenth of a
# notification POST (docs/benchmarks.md, "API"), for Flower's "sent" state alone. Flower still sees each
# task received, started and finished (worker events); signalbox_celery_tasks_published_total counts
# sends in process (after_task_publish), without an event.
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_SEND_TASK_EVENTS = True
# Off: a send running through a broker blip finishes and records what the provider accepted; a
# redelivered copy finds its rows already claimed (docs/architecture.md, the settings table).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Longer than the longest task's hard limit, so Redis never re-delivers a task still running.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
}
_keyprefix = env.str("CELERY_BROKER_KEYPREFIX", default="")
if _keyprefix:
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = _keyprefix
if int(CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]) <= CELERY_TASK_TIME_LIMIT:  # type: ignore[call-overload]
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must be longer than CELERY_TASK_TIME_LIMIT.")
# Tasks publish after commit; eager mode exists only for one-off scripts, never for the platform.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# --- Signalbox --------------------------------------------------------------------------------
SIGNALBOX = {
    # Keys: "sbx_" + 8 lookup characters + "." + secret; only the hash is stored.
    "API_KEY_PREFIX": "sbx_",
    # How long polling clients are told to wait between polls of a running task.
    "POLL_RETRY_AFTER_SECONDS": env.int("POLL_RETRY_AFTER_SECONDS", default=2),
}

# --- Logging (project/logging.py: structlog, JSON lines, correlation ids, redaction) -------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING_CONFIG = "project.logging.configure"
LOGGING = logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)  # raises ImproperlyConfigured on a bad value

PROMETHEUS_EXPORT_MIGRATIONS = False

# Celery's Django fixup closes the database connection around every task unless told to reuse
# it; close_old_connections() in workers/signals.py still drops broken or aged connections.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=10000)

# --- workflows, events and outbound webhooks ---------------------------------------------------
# Webhook URLs are tenant-supplied: private, loopback and link-local addresses are refused unless
# this is on (tests and on-premises installs that post to an internal network).
SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = env.bool("SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE", default=False)
SIGNALBOX_WEBHOOK_TIMEOUT_SECONDS = env.float("SIGNALBOX_WEBHOOK_TIMEOUT_SECONDS", default=15.0)
# Seconds to wait before each attempt (Svix's schedule): now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
SIGNALBOX_WEBHOOK_RETRY_SCHEDULE = env.list(
    "SIGNALBOX_WEBHOOK_RETRY_SCHEDULE", cast=int, default=[0, 5, 300, 1800, 7200, 18000, 36000, 36000]
)
# Waits up to this long ride on a Celery countdown; longer ones wait in PostgreSQL for the dispatcher.
SIGNALBOX_WEBHOOK_COUNTDOWN_MAX_SECONDS = env.int("SIGNALBOX_WEBHOOK_COUNTDOWN_MAX_SECONDS", default=60)
# An endpoint failing without a single success for this long is disabled (`endpoint.disabled`).
SIGNALBOX_WEBHOOK_DISABLE_AFTER_DAYS = env.float("SIGNALBOX_WEBHOOK_DISABLE_AFTER_DAYS", default=5.0)
# Events (with their rule executions and webhook messages) and finished transition intents are
# deleted after this many days (tenant override: settings["retention_days"]["events"]).
SIGNALBOX_EVENT_RETENTION_DAYS = env.int("SIGNALBOX_EVENT_RETENTION_DAYS", default=30)
# An event that this many rule actions led to (a rule's notification whose delivery event fires a
# rule, …) runs no rules: the guard against a rule feeding itself (docs/webhooks.md, "Loops").
SIGNALBOX_RULE_MAX_DEPTH = env.int("SIGNALBOX_RULE_MAX_DEPTH", default=3)
# Seconds before each retry of an event whose processing failed (not an action: the processing
# itself); once spent, the event is dead (replayable). [] means one attempt only.
SIGNALBOX_EVENT_RETRY_SCHEDULE = env.list("SIGNALBOX_EVENT_RETRY_SCHEDULE", cast=int, default=[10, 60, 300, 900])
# After a secret rotation, messages carry signatures of both secrets for this long by default.
SIGNALBOX_WEBHOOK_SECRET_OVERLAP_HOURS = env.float("SIGNALBOX_WEBHOOK_SECRET_OVERLAP_HOURS", default=24.0)
# Fernet key(s) encrypting webhook secrets at rest, comma-separated: the first encrypts, all decrypt
# (rotation). Empty: a key derived from SECRET_KEY, so rotating SECRET_KEY would orphan the secrets.
SIGNALBOX_ENCRYPTION_KEY = env.str("SIGNALBOX_ENCRYPTION_KEY", default="")
if SIGNALBOX_WEBHOOK_TIMEOUT_SECONDS <= 0 or SIGNALBOX_WEBHOOK_TIMEOUT_SECONDS > 60:
    raise ImproperlyConfigured("SIGNALBOX_WEBHOOK_TIMEOUT_SECONDS must be in (0, 60].")
if not SIGNALBOX_WEBHOOK_RETRY_SCHEDULE or any(s < 0 for s in SIGNALBOX_WEBHOOK_RETRY_SCHEDULE):
    raise ImproperlyConfigured("SIGNALBOX_WEBHOOK_RETRY_SCHEDULE must be a non-empty list of seconds >= 0.")
if len(SIGNALBOX_EVENT_RETRY_SCHEDULE) > 20 or any(s < 0 for s in SIGNALBOX_EVENT_RETRY_SCHEDULE):
    raise ImproperlyConfigured("SIGNALBOX_EVENT_RETRY_SCHEDULE must be at most 20 delays, in seconds >= 0.")

# --- Observability (docs/operations.md) -------------------------------------------------------
# Metrics: each worker's main process serves its prefork children's metrics on WORKER_METRICS_PORT
# (0 = off) when PROMETHEUS_MULTIPROC_DIR is set in its environment; the queue exporter
# (`python -m apps.observability.exporter`) serves queue depth and age. METRICS_ADDR is where both
# listen: loopback by default, 0.0.0.0 in containers.
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
METRICS_ADDR = env.str("METRICS_ADDR", default="127.0.0.1")
# Worker liveness: the file each worker touches from its event loop (empty = off), checked by
# `python -m workers.probe --max-age N`.
WORKER_HEARTBEAT_FILE = env.str("WORKER_HEARTBEAT_FILE", default="")
WORKER_HEARTBEAT_INTERVAL = env.float("WORKER_HEARTBEAT_INTERVAL", default=10.0)
# Graceful shutdown: on a cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT as the
# manifests set) running tasks get this long to finish, then are cancelled and go back on the queue.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", default=30.0)
# Also wait when idle, so the Redis transport restores reserved (ETA/countdown) messages before exit.
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = env.bool("CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE", default=False)
# Audit entries are kept this many days unless a tenant sets settings["retention_days"]["audit"].
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=365)
if WORKER_METRICS_PORT < 0 or WORKER_METRICS_PORT > 65535:
    raise ImproperlyConfigured("WORKER_METRICS_PORT must be a TCP port (1-65535), or 0 for none.")
if WORKER_HEARTBEAT_INTERVAL <= 0:
    raise ImproperlyConfigured("WORKER_HEARTBEAT_INTERVAL must be a positive number of seconds.")
if CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT < 0:
    raise ImproperlyConfigured("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT must be >= 0 seconds.")
if AUDIT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("AUDIT_RETENTION_DAYS must be at least 1.")

# --- notifications ----------------------------------------------------------------------------
# Ordered provider chain per channel (import paths or built-in names: in_app, sink,
# recording_sink); a channel not listed uses `sink` (in_app: `in_app`). See docs/notifications.md.
SIGNALBOX_CHANNEL_PROVIDERS: dict[str, list[str]] = env.json("SIGNALBOX_CHANNEL_PROVIDERS", default={})
# Where a tenant's provider chain comes from first (the providers app: its ProviderConfig rows,
# else the environment's credentials); an empty answer falls back to SIGNALBOX_CHANNEL_PROVIDERS.
SIGNALBOX_CHANNEL_CHAIN_RESOLVER = env.str(
    "SIGNALBOX_CHANNEL_CHAIN_RESOLVER", default="apps.providers.registry.provider_chain"
)
# Adapters available to tenants by name without being in a default chain.
SIGNALBOX_EXTRA_PROVIDERS: list[str] = env.list("SIGNALBOX_EXTRA_PROVIDERS", default=[])
# Pipeline knobs; every key and its default: apps/notifications/conf.py.
# Only what the environment sets (here and in the loops below); every key, its meaning and its default:
# apps/notifications/conf.py (SEND_LEASE_SECONDS defaults to CELERY_TASK_TIME_LIMIT + 60 there).
SIGNALBOX_NOTIFICATIONS: dict[str, object] = {
    _name: _cast(_variable)
    for _name, _variable, _cast in (
        ("FANOUT_CHUNK_SIZE", "NOTIFICATIONS_FANOUT_CHUNK_SIZE", env.int),
        ("FANOUT_SHARED_ROWS_MIN", "NOTIFICATIONS_FANOUT_SHARED_ROWS_MIN", env.int),
        ("SEND_BATCH_SIZE", "NOTIFICATIONS_SEND_BATCH_SIZE", env.int),
        ("MAX_ATTEMPTS", "NOTIFICATIONS_MAX_ATTEMPTS", env.int),
        ("RETRY_BASE_SECONDS", "NOTIFICATIONS_RETRY_BASE_SECONDS", env.float),
        ("SEND_LEASE_SECONDS", "NOTIFICATIONS_SEND_LEASE_SECONDS", env.int),
        # How long an ambiguous send (answer lost) waits for the provider's callback before a retry.
        ("RECONCILE_WINDOW_SECONDS", "SIGNALBOX_RECONCILE_WINDOW_SECONDS", env.float),
    )
    if os.environ.get(_variable)
}

# --- Providers --------------------------------------------------------------------------------
# Credentials of each channel provider (docs/providers.md): the chain for tenants without
# ProviderConfig rows of their own. Under DEBUG, every provider whose credentials are not set
# points at the local sandbox (`make run` starts it; its outbox is at SIGNALBOX_SANDBOX_URL);
# with DEBUG off no sandbox default applies and a provider is used only once configured.
SIGNALBOX_SANDBOX_URL = env.str(
    "SIGNALBOX_SANDBOX_URL", default=f"http://127.0.0.1:{env.int('SANDBOX_PORT', default=8025)}" if DEBUG else ""
).rstrip("/")
SIGNALBOX_SANDBOX_SMTP_PORT = env.int("SIGNALBOX_SANDBOX_SMTP_PORT", default=env.int("SMTP_PORT", default=1025))
# Per provider call; a provider slower than this is a transient failure (`timeout`).
SIGNALBOX_PROVIDER_TIMEOUT = env.float("SIGNALBOX_PROVIDER_TIMEOUT", default=10.0)
# How long `GET /api/v1/providers/` may reuse a provider's health check.
SIGNALBOX_PROVIDER_HEALTH_TTL = env.int("SIGNALBOX_PROVIDER_HEALTH_TTL", default=30)


def _sandboxed(*credentials: str) -> bool:
    """Whether a provider defaults to the sandbox: one is configured and none of its credentials is set."""
    return bool(SIGNALBOX_SANDBOX_URL) and not any(os.environ.get(name) for name in credentials)


DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Signalbox <noreply@signalbox.localhost>")
# SendGrid v3 (the EU region is SENDGRID_API_HOST=https://api.eu.sendgrid.com).
_sendgrid_sandbox = _sandboxed("SENDGRID_API_KEY")
SENDGRID_API_KEY = env.str("SENDGRID_API_KEY", default=_sandbox_defaults.SENDGRID_API_KEY if _sendgrid_sandbox else "")
SENDGRID_API_HOST = env.str(
    "SENDGRID_API_HOST", default=SIGNALBOX_SANDBOX_URL if _sendgrid_sandbox else "https://api.sendgrid.com"
)
# SMTP: Django's own EMAIL_* settings.
_smtp_sandbox = _sandboxed("EMAIL_HOST")
EMAIL_HOST = env.str("EMAIL_HOST", default="127.0.0.1" if _smtp_sandbox else "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=SIGNALBOX_SANDBOX_SMTP_PORT if _smtp_sandbox else 25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=SIGNALBOX_PROVIDER_TIMEOUT)
# Twilio Messaging: a from-number or a Messaging Service. Empty base URL: https://api.twilio.com.
_twilio_sandbox = _sandboxed("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
TWILIO_ACCOUNT_SID = env.str(
    "TWILIO_ACCOUNT_SID", default=_sandbox_defaults.TWILIO_ACCOUNT_SID if _twilio_sandbox else ""
)
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default=_sandbox_defaults.TWILIO_AUTH_TOKEN if _twilio_sandbox else "")
TWILIO_FROM = env.str("TWILIO_FROM", default="+15005550006" if _twilio_sandbox else "")
TWILIO_MESSAGING_SERVICE_SID = env.str("TWILIO_MESSAGING_SERVICE_SID", default="")
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default=SIGNALBOX_SANDBOX_URL if _twilio_sandbox else "")
# FCM HTTP v1: a service-account key file (or its JSON content); the project id defaults to the key's.
_fcm_sandbox = _sandboxed("FCM_SERVICE_ACCOUNT_FILE", "FCM_SERVICE_ACCOUNT_JSON")
FCM_SERVICE_ACCOUNT_FILE = env.str("FCM_SERVICE_ACCOUNT_FILE", default="")
FCM_SERVICE_ACCOUNT_JSON = env.str("FCM_SERVICE_ACCOUNT_JSON", default="")
FCM_PROJECT_ID = env.str("FCM_PROJECT_ID", default="")
FCM_ENDPOINT = env.str(
    "FCM_ENDPOINT",
    default=f"{SIGNALBOX_SANDBOX_URL}/v1/projects" if _fcm_sandbox else "https://fcm.googleapis.com/v1/projects",
)
# Development only: the sandbox hands out a service account whose token_uri is itself.
FCM_SANDBOX_SERVICE_ACCOUNT_URL = f"{SIGNALBOX_SANDBOX_URL}/_sandbox/fcm/service-account" if _fcm_sandbox else ""
# Slack: a bot token for chat.postMessage and/or an incoming-webhook URL.
_slack_sandbox = _sandboxed("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL")
SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default=_sandbox_defaults.SLACK_BOT_TOKEN if _slack_sandbox else "")
SLACK_WEBHOOK_URL = env.str("SLACK_WEBHOOK_URL", default="")
SLACK_API_BASE_URL = env.str(
    "SLACK_API_BASE_URL", default=f"{SIGNALBOX_SANDBOX_URL}/slack/api/" if _slack_sandbox else "https://slack.com/api/"
)
SLACK_DEFAULT_CHANNEL = env.str("SLACK_DEFAULT_CHANNEL", default="#notifications" if _slack_sandbox else "")
# The webhook channel signs with this Standard Webhooks secret (whsec_…) unless the recipient has its own.
SIGNALBOX_WEBHOOK_SIGNING_SECRET = env.str(
    "SIGNALBOX_WEBHOOK_SIGNING_SECRET",
    default=_production.DEV_WEBHOOK_SIGNING_SECRET if _sandboxed() else "",
)
# The environment's chain per channel, in order; by default every provider whose credentials are set.
SIGNALBOX_PROVIDER_CHAINS: dict[str, list[str]] = {
    "email": env.list(
        "SIGNALBOX_EMAIL_PROVIDERS",
        default=(["sendgrid"] if SENDGRID_API_KEY else [])
        + (["smtp"] if _smtp_sandbox or os.environ.get("EMAIL_HOST") else []),
    ),
    "sms": env.list("SIGNALBOX_SMS_PROVIDERS", default=["twilio"] if TWILIO_ACCOUNT_SID else []),
    "push": env.list(
        "SIGNALBOX_PUSH_PROVIDERS",
        default=["fcm"] if _fcm_sandbox or FCM_SERVICE_ACCOUNT_FILE or FCM_SERVICE_ACCOUNT_JSON else [],
    ),
    "chat": env.list("SIGNALBOX_CHAT_PROVIDERS", default=["slack"] if SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL else []),
    "webhook": env.list("SIGNALBOX_WEBHOOK_PROVIDERS", default=["webhook"] if SIGNALBOX_WEBHOOK_SIGNING_SECRET else []),
}
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS (STARTTLS) and EMAIL_USE_SSL (implicit TLS) exclude each other.")
if not DEBUG and SIGNALBOX_PROVIDER_CHAINS["email"] and not os.environ.get("DEFAULT_FROM_EMAIL"):
    raise ImproperlyConfigured("Set DEFAULT_FROM_EMAIL (the sender of notification emails) when email is configured.")

# --- tasks (tracked tasks, schedules, the Django Tasks backend; docs/tasks.md) ------------------
# Only what the environment sets; every key, its meaning and its default: apps/tasks/conf.py.
SIGNALBOX_TASKS: dict[str, object] = {
    _name: _cast(_variable)
    for _name, _variable, _cast in (
        ("LEASE_SECONDS", "SIGNALBOX_TASK_LEASE_SECONDS", env.int),
        ("PROGRESS_INTERVAL_SECONDS", "SIGNALBOX_TASK_PROGRESS_INTERVAL_SECONDS", env.float),
        ("CANCEL_CHECK_INTERVAL_SECONDS", "SIGNALBOX_TASK_CANCEL_CHECK_INTERVAL_SECONDS", env.float),
        ("RESULT_INLINE_MAX_BYTES", "SIGNALBOX_TASK_RESULT_INLINE_MAX_BYTES", env.int),
        ("RESULT_TTL_DAYS", "SIGNALBOX_TASK_RESULT_TTL_DAYS", env.int),
        ("DEAD_TTL_DAYS", "SIGNALBOX_TASK_DEAD_TTL_DAYS", env.int),
        ("COUNTDOWN_MAX_SECONDS", "SIGNALBOX_TASK_COUNTDOWN_MAX_SECONDS", env.int),
        ("PUBLISH_GRACE_SECONDS", "SIGNALBOX_TASK_PUBLISH_GRACE_SECONDS", env.int),
        ("MIN_SCHEDULE_INTERVAL_SECONDS", "SIGNALBOX_MIN_SCHEDULE_INTERVAL_SECONDS", env.int),
        ("TEST_TASKS", "SIGNALBOX_TEST_TASKS", env.bool),
    )
    if os.environ.get(_variable)
}
# Django's Tasks framework (`@task` / `.enqueue()`), run on Signalbox's Celery queues and tracked as
# TaskExecutions (apps/tasks/django_tasks_backend.py). "default" is the `tasks` queue.
TASKS = {
    "default": {
        "BACKEND": "apps.tasks.django_tasks_backend.SignalboxBackend",
        "QUEUES": ["default", "tasks", "maintenance"],
        "OPTIONS": {"MAX_RETRIES": env.int("SIGNALBOX_DJANGO_TASKS_MAX_RETRIES", default=3)},
    }
}
# One stable OpenAPI name for the execution status (the list and detail shapes share it).

# --- reliability (docs/reliability.md) ----------------------------------------------------------
# Redis for send rate limits and provider circuit breakers; empty: the broker's when it is Redis.
SIGNALBOX_REDIS_URL = env.str("SIGNALBOX_REDIS_URL", default="")
# A provider with FAILURES transient failures within WINDOW_SECONDS is skipped for COOLDOWN_SECONDS.
# Only what the environment sets; the defaults are BreakerSettings' (apps/providers/circuit.py).
SIGNALBOX_CIRCUIT_BREAKER: dict[str, float] = {
    _name: _cast(_variable)
    for _name, _variable, _cast in (
        ("FAILURES", "SIGNALBOX_CIRCUIT_FAILURES", env.int),
        ("WINDOW_SECONDS", "SIGNALBOX_CIRCUIT_WINDOW_SECONDS", env.float),
        ("COOLDOWN_SECONDS", "SIGNALBOX_CIRCUIT_COOLDOWN_SECONDS", env.float),
    )
    if os.environ.get(_variable)
}
# Send limits for every tenant (each tenant may tighten or loosen them in settings["rate_limits"]):
# {"recipient_per_hour": {"sms": 5}, "daily_quota": {"*": 100000, "sms": 1000},
#  "provider_per_second": {"twilio": {"rate": 10, "burst": 20}}}. Empty: no limits.
SIGNALBOX_RATE_LIMITS: dict[str, object] = env.json("SIGNALBOX_RATE_LIMITS", default={})
# Provider callbacks (SendGrid Event Webhook) older or newer than this are refused as replays.
SIGNALBOX_CALLBACK_MAX_AGE_SECONDS = env.int("SIGNALBOX_CALLBACK_MAX_AGE_SECONDS", default=300)
# Applied provider event ids are kept this long to recognise retried events.
SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS = env.int("SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS", default=7)
# SendGrid's Event Webhook verification key (Settings → Mail Settings → Signed Event Webhook), base64 DER.
SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = env.str(
    "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY",
    default=_sandbox_defaults.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY if _sendgrid_sandbox else "",
)
# Retry knobs and the sweeper's patience (the bound on anything stuck), by environment variable.
for _name, _variable in (
    ("RETRY_CAP_SECONDS", "NOTIFICATIONS_RETRY_CAP_SECONDS"),
    ("SWEEP_INTENT_AFTER_SECONDS", "NOTIFICATIONS_SWEEP_INTENT_AFTER_SECONDS"),
    ("SWEEP_CHUNK_AFTER_SECONDS", "NOTIFICATIONS_SWEEP_CHUNK_AFTER_SECONDS"),
    ("SWEEP_QUEUED_AFTER_SECONDS", "NOTIFICATIONS_SWEEP_QUEUED_AFTER_SECONDS"),
    ("SWEEP_BATCH_SIZE", "NOTIFICATIONS_SWEEP_BATCH_SIZE"),
    ("SWEEP_TIME_BUDGET_SECONDS", "NOTIFICATIONS_SWEEP_TIME_BUDGET_SECONDS"),
    ("FANOUT_CHUNK_MAX_ATTEMPTS", "NOTIFICATIONS_FANOUT_CHUNK_MAX_ATTEMPTS"),
):
    if os.environ.get(_variable):
        SIGNALBOX_NOTIFICATIONS[_name] = env.float(_variable)
# Template budgets (docs/notifications.md, "Template budgets"; defaults in apps/notifications/conf.py):
# every render of a tenant's template is bounded in loop iterations, value size, characters
# produced, time and output per field. NOTIFICATIONS_TEMPLATE_OUTPUT_LIMITS is JSON merged over the
# per-field defaults, e.g. {"sms.text": 480}.
for _name, _variable in (
    ("TEMPLATE_MAX_LOOP_ITERATIONS", "NOTIFICATIONS_TEMPLATE_MAX_LOOP_ITERATIONS"),
    ("TEMPLATE_MAX_VALUE_CHARS", "NOTIFICATIONS_TEMPLATE_MAX_VALUE_CHARS"),
    ("TEMPLATE_MAX_WORK_CHARS", "NOTIFICATIONS_TEMPLATE_MAX_WORK_CHARS"),
    ("TEMPLATE_RENDER_SECONDS", "NOTIFICATIONS_TEMPLATE_RENDER_SECONDS"),
):
    if os.environ.get(_variable):
        SIGNALBOX_NOTIFICATIONS[_name] = env.float(_variable)
if os.environ.get("NOTIFICATIONS_TEMPLATE_OUTPUT_LIMITS"):
    SIGNALBOX_NOTIFICATIONS["TEMPLATE_OUTPUT_LIMITS"] = env.json("NOTIFICATIONS_TEMPLATE_OUTPUT_LIMITS")
if SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS must be positive.")

# --- scheduling: digests and retention purges (docs/scheduling.md) ------------------------------
# Daily and weekly digests go at DAILY_AT local time, in each recipient's timezone, WEEKLY_DAY for the
# weekly one (a tenant may override both in Tenant.settings["digest"]); ITEM_LIMIT items are listed
# in one digest; windows per flush task, and how long a handed-out window may stay open before it is
# handed out again. Only what the environment sets; the defaults are DigestSettings'
# (apps/notifications/services/digest.py).
SIGNALBOX_DIGESTS: dict[str, object] = {
    _name: _cast(_variable)
    for _name, _variable, _cast in (
        ("DAILY_AT", "SIGNALBOX_DIGEST_DAILY_AT", env.str),
        ("WEEKLY_DAY", "SIGNALBOX_DIGEST_WEEKLY_DAY", env.str),
        ("ITEM_LIMIT", "SIGNALBOX_DIGEST_ITEM_LIMIT", env.int),
        ("FLUSH_BATCH_SIZE", "SIGNALBOX_DIGEST_FLUSH_BATCH_SIZE", env.int),
        ("REPUBLISH_AFTER_SECONDS", "SIGNALBOX_DIGEST_REPUBLISH_AFTER_SECONDS", env.int),
    )
    if os.environ.get(_variable)
}
# Days each table keeps its rows, overriding its retention policy's own default (each app registers its
# policies with their defaults: apps/notifications/operations.py, apps/events/operations.py); a tenant
# overrides any of them in Tenant.settings["retention_days"]. Rows still needed (in flight, scheduled,
# waiting for a digest, in a dedup/idempotency window) are never purged, whatever these say. Events,
# transition intents and audit entries have their own settings (SIGNALBOX_EVENT_RETENTION_DAYS,
# AUDIT_RETENTION_DAYS); a key here overrides them. Checked at start (apps/core/conf.py).
SIGNALBOX_RETENTION_DAYS: dict[str, int] = {
    _policy: env.int(_variable)
    for _policy, _variable in (
        ("deliveries", "SIGNALBOX_RETENTION_DELIVERIES_DAYS"),
        ("inbox_read", "SIGNALBOX_RETENTION_INBOX_READ_DAYS"),
        ("inbox_unread", "SIGNALBOX_RETENTION_INBOX_UNREAD_DAYS"),
        ("notifications", "SIGNALBOX_RETENTION_NOTIFICATIONS_DAYS"),
        ("digest_windows", "SIGNALBOX_RETENTION_DIGEST_WINDOWS_DAYS"),
        ("webhook_messages", "SIGNALBOX_RETENTION_WEBHOOK_MESSAGES_DAYS"),
    )
    if os.environ.get(_variable)
}
# One purge run stops after this long (the rest goes at the next hourly run); rows per batch.
SIGNALBOX_RETENTION_MAX_SECONDS = env.int("SIGNALBOX_RETENTION_MAX_SECONDS", default=240)
SIGNALBOX_RETENTION_BATCH_SIZE = env.int("SIGNALBOX_RETENTION_BATCH_SIZE", default=1000)
# Partitioned history (docs/partitions.md): months of partitions created ahead, and how long dropping
# an expired one may wait for its lock before leaving it to the next run.
SIGNALBOX_PARTITIONS_AHEAD = env.int("SIGNALBOX_PARTITIONS_AHEAD", default=3)
SIGNALBOX_PARTITION_LOCK_TIMEOUT_MS = env.int("SIGNALBOX_PARTITION_LOCK_TIMEOUT_MS", default=2000)

# --- Realtime: Django Channels (apps/realtime, docs/realtime.md) --------------------------------
# The `realtime` process (uvicorn project.asgi) serves only the live streams; the REST API stays
# on WSGI. Its channel layer is Redis: SIGNALBOX_REALTIME_REDIS_URL, else SIGNALBOX_REDIS_URL,
# else the broker's when it is Redis. With none, nothing is published and streams are refused.
ASGI_APPLICATION = "project.asgi.application"
_realtime_redis = (
    env.str("SIGNALBOX_REALTIME_REDIS_URL", default="")
    or SIGNALBOX_REDIS_URL
    or (CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "")
)
CHANNEL_LAYERS: dict[str, object] = (
    {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, the same as channels-redis's
                # 5 s BZPOPMIN: every idle receive timed out. The read timeout must exceed it.
                "hosts": [{"address": _realtime_redis, "socket_timeout": 15, "socket_connect_timeout": 2}],
                "prefix": f"{CELERY_BROKER_TRANSPORT_OPTIONS.get('global_keyprefix', '')}sbx:rt",
                # group_send drops a message for a channel holding this many unread: each stream
                # reads its channel eagerly into its own bounded queue, so only a stalled process hits it.
                "capacity": 5000,
                "expiry": 60,
            },
        }
    }
    if _realtime_redis
    else {}
)
SIGNALBOX_REALTIME = {
    "REDIS_URL": _realtime_redis,
    # Messages one connection may hold unsent before it is closed (4008) and told to resume.
    "QUEUE_LIMIT": env.int("SIGNALBOX_REALTIME_QUEUE_LIMIT", default=1000),
    "MAX_PER_RECIPIENT": env.int("SIGNALBOX_REALTIME_MAX_PER_RECIPIENT", default=10),
    "MAX_PER_TENANT": env.int("SIGNALBOX_REALTIME_MAX_PER_TENANT", default=20000),
    # How often an open stream re-checks its token or key (expiry ends it at once, on time).
    "AUTH_RECHECK_SECONDS": env.float("SIGNALBOX_REALTIME_AUTH_RECHECK_SECONDS", default=30.0),
    # Task and notification streams are pushed each change; this slow re-read is only a safety net
    # for the few transitions that publish nothing (docs/realtime.md).
    "STATE_REFRESH_SECONDS": env.float("SIGNALBOX_REALTIME_STATE_REFRESH_SECONDS", default=30.0),
    "HEARTBEAT_SECONDS": env.float("SIGNALBOX_REALTIME_HEARTBEAT_SECONDS", default=15.0),
    # A resume replays at most this many missed changes; past it the client is told to reload (4009).
    "REPLAY_LIMIT": env.int("SIGNALBOX_REALTIME_REPLAY_LIMIT", default=1000),
}

# --- Production guard (project/production.py, docs/security.md) --------------------------------
# Last, once every setting is known: with DEBUG off, committed development secrets, the provider
# sandbox, webhooks to private addresses, an unset broker or a per-process cache stop the process.
SIGNALBOX_ALLOW_INSECURE_SETTINGS = env.bool(_production.OVERRIDE, default=False)
if not DEBUG and not SIGNALBOX_ALLOW_INSECURE_SETTINGS:
    _insecure = _production.insecure_settings(globals(), os.environ)
    if _insecure:
        raise ImproperlyConfigured(_production.refusal(_insecure))
