#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on 127.0.0.1 for the test suite: starts them if they are
# installed but stopped, and fails loudly (never skips) if they cannot be had.
set -uo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }

wait_for() { for _ in $(seq 1 30); do "$1" && return 0; sleep 1; done; return 1; }

if ! pg_up; then
  echo "PostgreSQL is not answering on 127.0.0.1:5432; trying to start it..."
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  elif command -v pg_ctl >/dev/null 2>&1 && [ -n "${PGDATA:-}" ]; then
    pg_ctl -D "$PGDATA" -l "$PGDATA/server.log" start || true
  fi
  wait_for pg_up || { echo "ERROR: PostgreSQL is required by 'make test' and could not be reached or started on 127.0.0.1:5432." >&2; exit 1; }
fi

if ! redis_up; then
  echo "Redis is not answering on 127.0.0.1:6379; trying to start it..."
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /tmp/signalbox-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/signalbox-redis --logfile /tmp/signalbox-redis/redis.log || true
  fi
  wait_for redis_up || { echo "ERROR: Redis is required by 'make test' and could not be reached or started on 127.0.0.1:6379." >&2; exit 1; }
fi

PSQL="psql -h 127.0.0.1 -U ${PGUSER:-postgres} -d postgres -v ON_ERROR_STOP=1 -qtA"
$PSQL -c "select 1" >/dev/null || { echo "ERROR: cannot log in to PostgreSQL as ${PGUSER:-postgres} (trust auth expected on 127.0.0.1)." >&2; exit 1; }
[ "$($PSQL -c "select 1 from pg_database where datname='signalbox'")" = "1" ] || $PSQL -c "create database signalbox" >/dev/null
# Test databases left behind by an interrupted run, and only those: every pytest run registers its
# run id and process in $RUNS (tests/conftest.py), so a database whose run is still alive (another
# `make test`, or a single test file being run by hand) is left alone.
RUNS="${TMPDIR:-/tmp}/signalbox-test-runs"
for db in $($PSQL -c "select datname from pg_database where datname like 'test\_sbx\_%'"); do
  run="${db#test_sbx_}"
  run="${run%_gw*}"
  pid="$(cat "$RUNS/$run.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    continue
  fi
  $PSQL -c "drop database if exists \"$db\"" >/dev/null 2>&1 && rm -f "$RUNS/$run.pid" || true
done
# promtool unit-tests the alert rules (tests/manifests/test_alert_rules.py). It ships in Debian's
# `prometheus` package; installed here when missing (as root, as CI runs), else a loud failure.
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool is missing; installing Debian's prometheus package for it..."
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/tmp/signalbox-promtool-install.log 2>&1 || true
  fi
  command -v promtool >/dev/null 2>&1 || { echo "ERROR: 'make test' needs promtool (apt-get install prometheus; see /tmp/signalbox-promtool-install.log)." >&2; exit 1; }
fi
# --- Headless Chromium for the browser tests (tests/browser) ---------------------------------------
# Debian's chromium + chromium-driver, driven by Selenium; nothing downloads a browser at install
# time. Installed here when missing (as root, as CI runs), else a loud failure: the tests never skip.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "Chromium or chromedriver is missing; installing Debian's chromium and chromium-driver..."
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/tmp/signalbox-chromium-install.log 2>&1 || true
  fi
  { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { echo "ERROR: 'make test' needs headless Chromium (apt-get install chromium chromium-driver; see /tmp/signalbox-chromium-install.log)." >&2; exit 1; }
fi
echo "PostgreSQL and Redis are up on 127.0.0.1; promtool is $(command -v promtool)."
