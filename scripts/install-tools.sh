#!/usr/bin/env bash
# Install the non-Python tools the ops tests use, on a fresh Debian machine (run as root):
#   - promtool and a real Prometheus server: Debian's `prometheus` package
#   - pm2: `npm ci` from package-lock.json (node_modules/, git-ignored)
# hadolint and check-jsonschema come from the Python `test` extra (pyproject.toml).
# Idempotent and quick when everything is already there. Usage: scripts/install-tools.sh
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'install-tools: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

install_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        log "prometheus and promtool already installed"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no apt-get: install Prometheus (promtool, prometheus) by hand"
        return 1
    fi
    log "installing Debian's prometheus package (promtool + server)"
    as_root apt-get update -qq
    # policy-rc.d or no systemd: the package's service is not started, only the binaries are used.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
}

install_pm2() {
    if ! command -v npm >/dev/null 2>&1; then
        log "no npm: install Node.js 20+ and npm, then rerun (PM2 tests skip without it)"
        return 1
    fi
    if [ -x node_modules/.bin/pm2 ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
        log "pm2 already installed ($(node -p "require('./node_modules/pm2/package.json').version"))"
        return 0
    fi
    log "installing pm2 with npm ci"
    npm ci --no-audit --no-fund --loglevel=error
}

status=0
install_prometheus || status=1
install_pm2 || status=1
exit "$status"
