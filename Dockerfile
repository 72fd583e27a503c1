# One image for every Signalbox process; the command picks the role (docker-compose.yml, k8s/):
#   web                gunicorn -c python:project.gunicorn project.wsgi
#   worker (a group)   celery -A workers.celery worker -Q <the group's queues> ...
#   beat               celery -A workers.celery beat
#   flower             celery -A workers.celery flower --conf=workers/flowerconfig.py
#   metrics exporter   python -m apps.observability.exporter
#   migrations         python manage.py migrate_and_schedule (k8s: an init container of every pod)
#
# Build: `make image` (= docker build --build-arg VERSION=$(make -s version) .). Supported Pythons: 3.11 to
# 3.13 (--build-arg PYTHON_VERSION=3.13). Only the runtime set is installed, every package hash-checked.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# The release, from pyproject.toml (the one version source): `make image` passes it, and the build fails
# below if they differ. A plain `docker build` / `docker compose build` labels the image "dev".
ARG VERSION=dev
LABEL org.opencontainers.image.title="signalbox" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=project.settings \
    SIGNALBOX_DATA_DIR=/app/data \
    STATIC_ROOT=/app/static \
    LOG_FORMAT=json \
    PORT=8000

WORKDIR /app
RUN groupadd --system --gid 10001 signalbox \
    && useradd --system --uid 10001 --gid signalbox --home-dir /app --shell /usr/sbin/nologin signalbox

# Dependencies first: this layer is rebuilt only when the lock changes. The runtime set only (no test
# or local-run tools), every package (transitive ones too) pinned and checked against its hash.
# REQUIREMENTS=dev only for the provider sandbox of docker-compose.dev.yml, never for production.
ARG REQUIREMENTS=base
COPY requirements/ requirements/
RUN pip install --require-hashes --no-deps -r requirements/${REQUIREMENTS}.txt

COPY --chown=signalbox:signalbox . .
RUN [ "${VERSION}" = dev ] \
    || test "$(python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" = "${VERSION}" \
    || { echo "VERSION=${VERSION} differs from pyproject.toml's version: build with make image" >&2; exit 1; }
# Static files (admin, API docs) are collected at build time, with the production storage's manifest,
# and served by the app (WhiteNoise). Bytecode is compiled now: the root filesystem is read-only.
# Build time is no deployment: no broker or cache exists, hence the named override (docs/security.md).
RUN DEBUG=0 SIGNALBOX_ALLOW_INSECURE_SETTINGS=1 \
    SECRET_KEY=collectstatic-only-build-time-key-not-used-at-run-time ALLOWED_HOSTS=localhost \
    SIGNALBOX_PUBLIC_URL=https://build.invalid DATABASE_URL=postgres://build@127.0.0.1/build \
    python manage.py collectstatic --noinput \
    && python -m compileall -q apps project workers sandbox \
    && mkdir -p /app/data/media /app/data/sandbox /var/lib/flower \
    && chown -R signalbox:signalbox /app/data /var/lib/flower

USER signalbox:signalbox
EXPOSE 8000
CMD ["gunicorn", "-c", "python:project.gunicorn", "project.wsgi"]
