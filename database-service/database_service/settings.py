"""database-service's own settings (light to import: gunicorn.conf.py reads them)."""

from __future__ import annotations

from urllib.parse import urlsplit

from shared.config import Setting, parse_bool, parse_float, parse_int, parse_url

SERVICE = "database-service"
DEFAULTS = {"PORT": 5020}
# The `scope` of each @rate_limit route: RATE_LIMIT_<SCOPE> sets its requests per minute.
RATE_LIMIT_SCOPES = ("signals_save", "signals_history", "performance_track", "performance_trades")
_URL_SCHEMES = parse_url("sqlite", "postgresql", "postgres")


def parse_database_url(value: str) -> str:
    """A `sqlite:///path` or `postgresql://...` URL; a SQLite URL must name a file."""
    url = _URL_SCHEMES(value)
    if url is None:
        raise ValueError("must be a sqlite:///path or postgresql://user@host/db URL")
    if urlsplit(url).scheme == "sqlite" and urlsplit(url).path in ("", "/"):
        raise ValueError("a sqlite URL needs a file path, e.g. sqlite:///data/sardag.db")
    return str(url)


SETTINGS = (
    Setting("DATABASE_URL", parse_database_url, "sqlite:///data/sardag.db", "where signals and trades live"),
    Setting("DATABASE_POOL_SIZE", parse_int(1, 100), 8, "PostgreSQL connections per worker"),
    Setting("STATS_CACHE_TTL", parse_float(0.001), 30.0, "seconds /performance/stats stays cached"),
    Setting("MIGRATE_ON_START", parse_bool, True, "apply pending migrations at start-up"),
)
