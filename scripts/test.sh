#!/usr/bin/env bash
# Install (if needed) the project and the tools its tests use, then run the whole suite
# with coverage. Extra arguments go to pytest. Under CI=true a missing PostgreSQL, Redis,
# Prometheus or PM2 fails the run instead of skipping. Usage: scripts/test.sh [-m unit]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if ! scripts/install-tools.sh; then
    echo "test: some non-Python tools could not be installed; their tests will skip (or fail under CI)" >&2
fi
export PATH="$PWD/node_modules/.bin:$PATH"
set +e
.venv/bin/python -m pytest --cov --cov-report=term "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test: pytest collected no tests" >&2
fi
exit "$status"
