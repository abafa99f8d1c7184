#!/usr/bin/env bash
# Install the non-Python tools the ops tests use, on a fresh Debian machine (run as root):
#   - promtool and a real Prometheus server: Debian's `prometheus` package
#   - nginx, the load balancer of deploy/nginx: Debian's `nginx` package
#   - etcd, the DCS of the Patroni failover tests (Patroni itself is in the `test` extra):
#     Debian's `etcd-server` package
#   - pm2: `npm ci` from package-lock.json (node_modules/, git-ignored)
#   - chromium: Debian's `chromium` package, the headless browser that loads each /docs page
# hadolint, check-jsonschema, actionlint and shellcheck come from the Python `test` extra
# (pyproject.toml). The Debian packages are there for their binaries: the tests start them
# on free ports; where policy-rc.d or no init system stops it, no service starts.
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

apt_updated=0

# apt_install PACKAGE BINARY...: install Debian's PACKAGE unless every BINARY is there.
apt_install() {
    local package=$1 binary missing=0
    shift
    for binary in "$@"; do
        command -v "$binary" >/dev/null 2>&1 || [ -x "/usr/sbin/$binary" ] || missing=1
    done
    if [ "$missing" -eq 0 ]; then
        log "$package already installed"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no apt-get: install $package ($*) by hand"
        return 1
    fi
    log "installing Debian's $package package"
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package"
}

install_prometheus() {
    apt_install prometheus promtool prometheus
}

install_nginx() {
    apt_install nginx nginx
}

install_etcd() {
    apt_install etcd-server etcd
}

install_chromium() {
    apt_install chromium chromium
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
install_nginx || status=1
install_etcd || status=1
install_pm2 || status=1
install_chromium || status=1
exit "$status"
