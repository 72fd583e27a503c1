# One image for every Signalbox process; the command picks the role (docker-compose.yml, k8s/):
#   web                gunicorn -c python:project.gunicorn project.wsgi
#   worker (a group)   celery -A workers.celery worker -Q <the group's queues> ...
#   beat               celery -A workers.celery beat
#   flower             celery -A workers.celery flower --conf=workers/flowerconfig.py
#   metrics exporter   python -m apps.observability.exporter
#   migrations         python manage.py migrate && python manage.py setup_schedules
FROM python:3.11-slim-bookworm

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

# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements/base.txt requirements/base.txt
RUN pip install -r requirements/base.txt

COPY --chown=signalbox:signalbox . .
# Static files (admin, API docs) are collected at build time, with the production storage's manifest,
# and served by the app (WhiteNoise). Bytecode is compiled now: the root filesystem is read-only.
RUN DEBUG=0 SECRET_KEY=collectstatic-only-build-time-key-not-used-at-run-time ALLOWED_HOSTS=localhost \
    SIGNALBOX_PUBLIC_URL=https://build.invalid DATABASE_URL=postgres://build@127.0.0.1/build \
    python manage.py collectstatic --noinput \
    && python -m compileall -q apps project workers sandbox \
    && mkdir -p /app/data/media /app/data/sandbox /var/lib/flower \
    && chown -R signalbox:signalbox /app/data /var/lib/flower

USER signalbox:signalbox
EXPOSE 8000
CMD ["gunicorn", "-c", "python:project.gunicorn", "project.wsgi"]
