#!/usr/bin/env bash
# The shipped fake Binance exchange (no internet needed): the one place that names its module,
# for scripts/run.sh (FEED=fake, make run-offline) and ecosystem.config.js (FEED=fake under PM2).
# A tool of the checkout (tools/fake-exchange), in no wheel or image; its extra is `fake-exchange`.
# Runs in the Python environment SARDAG_VENV (default .venv); arguments go to it.
# Usage: scripts/fake-exchange.sh [--port 9443] [--rate N] [--frames FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/tools/fake-exchange${PYTHONPATH:+:$PYTHONPATH}"
exec "${SARDAG_VENV:-.venv}/bin/python" -m fake_exchange "$@"
