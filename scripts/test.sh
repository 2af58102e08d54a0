#!/usr/bin/env bash
# Quick start, command 2: set up and run the whole test suite.
# PostgreSQL and Redis are started here on loopback (installed with apt-get when absent) unless
# DATABASE_URL / REDIS_URL are given; then the smoke part runs again on the embedded SQLite
# default. Everything started here is stopped on exit. Extra arguments go to the PostgreSQL run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

started=$(date +%s)
ensure_venv requirements-dev.txt
RUN_DIR=$(mktemp -d /tmp/control-plane-test.XXXXXX)
chmod 755 "$RUN_DIR"
PG_CTL=""
PG_DATA="$RUN_DIR/pg"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  if [ -n "$PG_CTL" ]; then as_pg "$PG_CTL" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true; fi
  if [ -f "$RUN_DIR/redis.pid" ]; then kill "$(cat "$RUN_DIR/redis.pid")" 2>/dev/null || true; fi
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "${DATABASE_URL:-}" ]; then
  [ -n "$(pg_bindir)" ] || apt_install postgresql
  BIN=$(pg_bindir)
  PG_CTL="$BIN/pg_ctl"
  PG_PORT=$(free_port)
  mkdir -p "$PG_DATA"
  [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DATA"
  as_pg "$BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  as_pg "$PG_CTL" -D "$PG_DATA" -l "$PG_DATA/server.log" -w start -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null
  as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres control_plane
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/control_plane"
  echo "==> PostgreSQL on 127.0.0.1:$PG_PORT"
fi

if [ -z "${REDIS_URL:-}" ]; then
  command -v redis-server >/dev/null || apt_install redis-server
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --pidfile "$RUN_DIR/redis.pid" --logfile "$RUN_DIR/redis.log"
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "==> Redis on 127.0.0.1:$REDIS_PORT"
fi

# tests/live runs the README's curl | jq examples against the quick start (skipped without them).
if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then
  apt_install curl jq || echo "==> no curl or jq: the README examples test will be skipped"
fi

export DJANGO_SETTINGS_MODULE=config.settings.test
echo "==> ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "==> import layers (.importlinter)"
"$VENV/bin/lint-imports" --no-cache
echo "==> migrations are in step with the models"
"$VENV/bin/python" manage.py makemigrations --check --dry-run

echo "==> test suite on PostgreSQL and Redis"
"$VENV/bin/pytest" -p no:cacheprovider -n "${TEST_WORKERS:-2}" "$@"

echo "==> smoke part on the embedded SQLite default"
# VAR_DIR: the embedded defaults' folders go to the throw-away directory, not the checkout.
DATABASE_URL="sqlite:///$RUN_DIR/smoke.sqlite3" REDIS_URL="" CELERY_BROKER_URL="" VAR_DIR="$RUN_DIR/var" \
  "$VENV/bin/pytest" -p no:cacheprovider -n "${TEST_WORKERS:-2}" -m smoke -q

echo "==> test command finished in $(( $(date +%s) - started ))s"
