#!/usr/bin/env bash
# Install (if needed) the project and the tools its tests use, then run the whole suite
# with coverage. Extra arguments go to pytest. Under CI=true a missing PostgreSQL, Redis,
# Prometheus or PM2 fails the run instead of skipping, and two steps come first:
#   1. the unit tests alone, with PostgreSQL and Redis unreachable (a network namespace of
#      their own when `unshare` is allowed) and no test allowed to start a process, in four
#      pytest-xdist workers (UNIT_WORKERS; they mostly wait on loopback sockets and timers);
#   2. mypy (pyproject.toml's [tool.mypy]).
# Every step runs; the exit status is the first failure's. Usage: scripts/test.sh [-m unit]
# (`make test-unit` adds `-n 4 --dist worksteal`: the unit tests in parallel workers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if ! scripts/install-tools.sh; then
    echo "test: some non-Python tools could not be installed; their tests will skip (or fail under CI)" >&2
fi
export PATH="$PWD/node_modules/.bin:$PATH"
# Every pytest process (each xdist worker too) compiles the services and rewrites the tests'
# asserts as it imports them: about 1.3 s of CPU a process when no bytecode may be written
# (PYTHONDONTWRITEBYTECODE=1). Cache it under .venv instead, never beside the sources.
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$PWD/.venv/pycache}"
unset PYTHONDONTWRITEBYTECODE

status=0
step() {  # name, command...: run it, keep the first failing status
    local name=$1 code=0
    shift
    echo "test: $name" >&2
    "$@" || code=$?
    if [ "$code" -eq 5 ]; then
        echo "test: $name: pytest collected no tests" >&2
    fi
    if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$code
    fi
}

unit_alone() {
    local run=(env -u REDIS_URL -u DATABASE_URL SARDAG_UNIT_GUARD=1
        TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:9/none TEST_REDIS_URL=redis://127.0.0.1:9/0
        .venv/bin/python -m pytest -m unit -q -p no:cacheprovider -n "${UNIT_WORKERS:-4}" --dist worksteal)
    if command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
        unshare -n sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}"
    else
        echo "test: no network namespace here; PostgreSQL and Redis are unreachable by address only" >&2
        "${run[@]}"
    fi
}

if [ "${CI:-}" = "true" ]; then
    step "unit tests with no server reachable" unit_alone
    step "mypy" .venv/bin/mypy
fi
step "the whole suite" .venv/bin/python -m pytest --cov --cov-report=term "$@"
exit "$status"
