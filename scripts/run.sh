#!/usr/bin/env bash
# Install (if needed) and run both services on embedded defaults: database-service on
# 127.0.0.1:5020 (SQLite under data/) and websocket-streaming on 127.0.0.1:5021 (prices in
# memory). FEED=fake runs the fake exchange (tools/fake-exchange) as the price feed (no internet needed).
# DATABASE_SERVICE_PORT, WEBSOCKET_STREAMING_PORT and FAKE_PORT move the ports (tests run it
# on free ports). A port already taken stops it before anything starts, with one line
# saying which and by what. Ctrl-C stops everything.
# Usage: scripts/run.sh   or   FEED=fake scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DB_PORT="${DATABASE_SERVICE_PORT:-5020}"
WS_PORT="${WEBSOCKET_STREAMING_PORT:-5021}"
FAKE_PORT="${FAKE_PORT:-9443}"
fake=0
[ "${FEED:-binance}" = "fake" ] && fake=1

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

held() {  # the sockets on local port $1 that keep gunicorn from binding it (ss, when installed)
    command -v ss >/dev/null 2>&1 && ss -Htanp exclude time-wait "sport = :$1" 2>/dev/null
}

owner() {  # "gunicorn (pid 123)" when the system says who holds port $1
    local found
    found=$(held "$1" | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n 1 \
        | sed 's/users:(("\([^"]*\)",pid=\([0-9]*\)/\1 (pid \2)/' || true)
    echo "${found:-a process this user cannot see}"
}

check_port() {  # name, port, variable that moves it
    if listening "$2" || [ -n "$(held "$2" || true)" ]; then
        echo "run: port $2 for $1 is taken by $(owner "$2"); stop it or set $3" >&2
        exit 1
    fi
}

check_port database-service "$DB_PORT" DATABASE_SERVICE_PORT
check_port websocket-streaming "$WS_PORT" WEBSOCKET_STREAMING_PORT
[ "$fake" = 1 ] && check_port "the fake exchange" "$FAKE_PORT" FAKE_PORT

scripts/bootstrap.sh run
mkdir -p data

# Job control puts each server in a process group of its own: Ctrl-C reaches this script
# only, and the trap stops each server with one SIGTERM. A gunicorn worker that gets the
# terminal's SIGINT and its master's SIGQUIT at once can hang in its own shutdown.
# The services stop first, the fake exchange after them: stopped first, it would make
# websocket-streaming log "upstream connection lost" on every Ctrl-C.
set -m
pids=()
fake_pid=""
stop_all() {
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    if [ -n "$fake_pid" ]; then
        kill -TERM "$fake_pid" 2>/dev/null || true
        wait "$fake_pid" 2>/dev/null || true
    fi
}
trap stop_all EXIT INT TERM

if [ "$fake" = 1 ]; then
    scripts/fake-exchange.sh --port "$FAKE_PORT" &  # execs Python: $! is the server itself
    fake_pid=$!
    for _ in $(seq 200); do  # up to 20 s: the services' first connection must find it
        listening "$FAKE_PORT" && break
        kill -0 "$fake_pid" 2>/dev/null || { echo "run: the fake exchange exited" >&2; exit 1; }
        sleep 0.1
    done
    listening "$FAKE_PORT" || { echo "run: the fake exchange did not listen on $FAKE_PORT" >&2; exit 1; }
    export BINANCE_WS_URL="ws://127.0.0.1:$FAKE_PORT" BINANCE_REST_URL="http://127.0.0.1:$FAKE_PORT"
fi
PORT="$DB_PORT" .venv/bin/gunicorn -c database-service/gunicorn.conf.py "database_service:create_app()" &
pids+=($!)
PORT="$WS_PORT" .venv/bin/gunicorn -c websocket-streaming/gunicorn.conf.py "websocket_streaming:create_app()" &
pids+=($!)
echo "run: database-service http://127.0.0.1:$DB_PORT  websocket-streaming http://127.0.0.1:$WS_PORT (Ctrl-C stops)" >&2
wait -n "${pids[@]}" ${fake_pid:+"$fake_pid"}
