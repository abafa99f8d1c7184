#!/usr/bin/env bash
# Install (if needed) and run both services on embedded defaults: database-service on
# 127.0.0.1:5020 (SQLite under data/) and websocket-streaming on 127.0.0.1:5021 (prices in
# memory). FEED=fake runs the shipped fake exchange as the price feed (no internet needed).
# DATABASE_SERVICE_PORT, WEBSOCKET_STREAMING_PORT and FAKE_PORT move the ports (tests run it
# on free ports). Ctrl-C stops everything. Usage: scripts/run.sh   or   FEED=fake scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
mkdir -p data

pids=()
stop_all() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop_all EXIT INT TERM

if [ "${FEED:-binance}" = "fake" ]; then
    FAKE_PORT="${FAKE_PORT:-9443}"
    .venv/bin/python -m websocket_streaming.fake_exchange --port "$FAKE_PORT" &
    pids+=($!)
    export BINANCE_WS_URL="ws://127.0.0.1:$FAKE_PORT" BINANCE_REST_URL="http://127.0.0.1:$FAKE_PORT"
fi
DB_PORT="${DATABASE_SERVICE_PORT:-5020}"
WS_PORT="${WEBSOCKET_STREAMING_PORT:-5021}"
PORT="$DB_PORT" .venv/bin/gunicorn -c database-service/gunicorn.conf.py "database_service:create_app()" &
pids+=($!)
PORT="$WS_PORT" .venv/bin/gunicorn -c websocket-streaming/gunicorn.conf.py "websocket_streaming:create_app()" &
pids+=($!)
echo "run: database-service http://127.0.0.1:$DB_PORT  websocket-streaming http://127.0.0.1:$WS_PORT (Ctrl-C stops)" >&2
wait -n "${pids[@]}"
