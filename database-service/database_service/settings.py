"""database-service's own settings (light to import: gunicorn.conf.py reads them)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from shared.config import ConfigError, Setting, SharedConfig, parse_bool, parse_float, parse_int, parse_url
from shared.secrets import mask_url_secrets

SERVICE = "database-service"
DEFAULTS = {"PORT": 5020}
# The `scope` of each @rate_limit route: RATE_LIMIT_<SCOPE> sets its requests per minute.
RATE_LIMIT_SCOPES = ("signals_save", "signals_history", "performance_track", "performance_trades")
_URL_SCHEMES = parse_url("sqlite", "postgresql", "postgres")
_POSTGRES_SCHEMES = parse_url("postgresql", "postgres")
# libpq 14+: which server of a multi-host URL a connection settles on.
SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
# PostgreSQL timeouts (seconds) and keepalives: the settings' defaults, and pg_pool.Timeouts'.
CONNECT_TIMEOUT, STATEMENT_TIMEOUT, LOCK_TIMEOUT, REQUEST_TIMEOUT = 3, 5.0, 3.0, 10.0
POOL_SIZE = 8  # PostgreSQL connections per worker
KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, KEEPALIVES_COUNT = 10, 5, 3
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]*)(?::(\d*))?$")


def parse_database_url(value: str) -> str:
    """A `sqlite:///path` or `postgresql://...` URL (libpq multi-host allowed); SQLite needs a file."""
    url = _URL_SCHEMES(value)
    if url is None:
        raise ValueError("must be a sqlite:///path or postgresql://user@host/db URL")
    if urlsplit(url).scheme == "sqlite":
        if urlsplit(url).path in ("", "/"):
            raise ValueError("a sqlite URL needs a file path, e.g. sqlite:///data/sardag.db")
        return str(url)
    check_postgres_url(url)
    return str(url)


def parse_read_url(value: str) -> str | None:
    """An optional `postgresql://` URL for reads (standbys), libpq multi-host allowed."""
    url = _POSTGRES_SCHEMES(value)
    if url is None:
        return None
    check_postgres_url(url)
    return str(url)


def check_postgres_url(url: str) -> None:
    """Raise ValueError (password never quoted) unless libpq can use `url` as written."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    hosts = parts.netloc.rpartition("@")[2].split(",")
    for host in hosts:
        _check_host(host, several=len(hosts) > 1)
    for attrs in query.get("target_session_attrs", []):
        if attrs not in SESSION_ATTRS:
            raise ValueError(f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}, got {attrs!r}")
    _check_with_libpq(url)


def _check_host(host: str, several: bool) -> None:
    match = _HOST.match(unquote(host))
    if match is None:
        raise ValueError(f"host {host!r} is not host[:port] (hosts are separated by commas)")
    if several and not match[1]:
        raise ValueError("an empty host in the multi-host list (a stray comma?)")
    port = match[2]
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"host {host!r} has no valid port (1-65535)")


def _check_with_libpq(url: str) -> None:
    """libpq's own parser: unknown parameters, bad percent-encoding (its message masked)."""
    import psycopg2
    import psycopg2.extensions

    try:
        psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        message = mask_url_secrets(" ".join(str(exc).split()), url)
        raise ValueError(f"libpq cannot read it: {message}") from None


def check(config: Mapping[str, Any]) -> None:
    """The checks across settings: a read URL needs PostgreSQL; the client outwaits the server."""
    if config.get("DATABASE_READ_URL") and urlsplit(str(config["DATABASE_URL"])).scheme == "sqlite":
        raise ConfigError("DATABASE_READ_URL", "needs a postgresql:// DATABASE_URL (SQLite has no standbys)")
    if config["DATABASE_TIMEOUT"] <= config["DATABASE_STATEMENT_TIMEOUT"]:
        raise ConfigError(
            "DATABASE_TIMEOUT",
            f"must be longer than DATABASE_STATEMENT_TIMEOUT ({config['DATABASE_STATEMENT_TIMEOUT']:g} s), "
            f"so the server's own limit answers first, got {config['DATABASE_TIMEOUT']:g}",
        )


SETTINGS = (
    Setting("DATABASE_URL", parse_database_url, "sqlite:///data/sardag.db", "where signals and trades live"),
    Setting("DATABASE_READ_URL", parse_read_url, None, "PostgreSQL standbys for history, one signal, stats"),
    Setting("DATABASE_POOL_SIZE", parse_int(1, 100), POOL_SIZE, "PostgreSQL connections per worker"),
    Setting(
        "DATABASE_CONNECT_TIMEOUT", parse_int(2, 60), CONNECT_TIMEOUT, "seconds to connect, per host (libpq)"
    ),
    Setting(
        "DATABASE_STATEMENT_TIMEOUT",
        parse_float(0.1, 600),
        STATEMENT_TIMEOUT,
        "PostgreSQL statement_timeout, s",
    ),
    Setting("DATABASE_LOCK_TIMEOUT", parse_float(0.1, 600), LOCK_TIMEOUT, "PostgreSQL lock_timeout, s"),
    Setting(
        "DATABASE_TIMEOUT",
        parse_float(0.5, 600),
        REQUEST_TIMEOUT,
        "seconds a call waits for PostgreSQL, then 503",
    ),
    Setting(
        "DATABASE_KEEPALIVES_IDLE", parse_int(1, 7200), KEEPALIVES_IDLE, "idle seconds before keepalive probes"
    ),
    Setting(
        "DATABASE_KEEPALIVES_INTERVAL",
        parse_int(1, 600),
        KEEPALIVES_INTERVAL,
        "seconds between keepalive probes",
    ),
    Setting(
        "DATABASE_KEEPALIVES_COUNT", parse_int(1, 100), KEEPALIVES_COUNT, "unanswered probes: the link is dead"
    ),
    Setting("STATS_CACHE_TTL", parse_float(0.001), 30.0, "seconds /performance/stats stays cached"),
    Setting("MIGRATE_ON_START", parse_bool, True, "apply pending migrations at start-up"),
)


@dataclass(frozen=True, repr=False)
class DatabaseConfig(SharedConfig):
    """database-service's typed configuration: the shared settings and those above."""

    database_url: str
    database_read_url: str | None
    database_pool_size: int
    database_connect_timeout: int
    database_statement_timeout: float
    database_lock_timeout: float
    database_timeout: float
    database_keepalives_idle: int
    database_keepalives_interval: int
    database_keepalives_count: int
    stats_cache_ttl: float
    migrate_on_start: bool
