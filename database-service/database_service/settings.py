"""database-service's own settings (light to import: gunicorn.conf.py reads them)."""

from __future__ import annotations

from shared.config import Setting, parse_bool, parse_float, parse_int

SERVICE = "database-service"
DEFAULTS = {"PORT": 5020}
SETTINGS = (
    Setting("DATABASE_POOL_SIZE", parse_int(1, 100), 8, "PostgreSQL connections per worker"),
    Setting("STATS_CACHE_TTL", parse_float(0.001), 30.0, "seconds /performance/stats stays cached"),
    Setting("MIGRATE_ON_START", parse_bool, True, "apply pending migrations at start-up"),
)
