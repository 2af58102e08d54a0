#!/usr/bin/env bash
# Quick start, command 1: set up and run the control plane on the embedded defaults (SQLite,
# local-memory cache, file-system Celery transport) with demo data. Give DATABASE_URL and
# REDIS_URL to run on PostgreSQL and Redis instead. One Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_venv requirements.txt
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.dev}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}

"$VENV/bin/python" manage.py migrate --noinput
"$VENV/bin/python" manage.py load_demo_data

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo "==> stopping"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

"$VENV/bin/celery" -A config worker --loglevel=INFO --concurrency=1 &
pids+=($!)
"$VENV/bin/celery" -A config beat --loglevel=INFO &
pids+=($!)
# ASGI, the serving model (docs/gateway.md): LLM calls wait on the event loop, not on a worker.
"$VENV/bin/uvicorn" config.asgi:application --host "$HOST" --port "$PORT" --no-access-log &
pids+=($!)

echo "==> API http://$HOST:$PORT/api/v1/  docs http://$HOST:$PORT/api/docs/  admin http://$HOST:$PORT/admin/"
# When any of the three stops, stop the others.
wait -n
