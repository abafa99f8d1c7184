"""database-service whose migration 0002 is a stand-in the server ends the session of.

This machine's PostgreSQL has no TimescaleDB. The stand-in behaves like `0002_timescaledb`
on a server where the library is installed but not preloaded: an optional migration
(`requires-extension`) during which the server ends the session (`FATAL`), unless
`pg_stat_statements` is in `shared_preload_libraries`; then it applies. Everything else is
the shipped service. Used by gunicorn (`preload_probe_app:create_app()`) and as the
migrate CLI (`python preload_probe_app.py migrate`).
"""

from __future__ import annotations

import sys

from database_service import create_app as create_service_app
from database_service.__main__ import main as service_main
from database_service.storage import pg_migrations
from database_service.storage.base import Migration, load_migrations
from flask import Flask

PROBE_SQL = """
DO $$
BEGIN
    IF position('pg_stat_statements' IN current_setting('shared_preload_libraries')) = 0 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
END
$$;
CREATE TABLE IF NOT EXISTS preload_probe (applied_at timestamptz NOT NULL DEFAULT now());
"""
PROBE = Migration(2, "preload_probe", PROBE_SQL, "pg_stat_statements")


def migrations(dialect: str) -> list[Migration]:
    """The shipped migrations with the stand-in in place of 0002 (PostgreSQL only)."""
    shipped = load_migrations(dialect)
    if dialect != "postgres":
        return shipped
    return sorted([*(m for m in shipped if m.version != PROBE.version), PROBE], key=lambda m: m.version)


def install() -> None:
    """Make the PostgreSQL migration runner use `migrations`."""
    pg_migrations.load_migrations = migrations  # type: ignore[assignment]


def create_app() -> Flask:
    """The database-service app, with the stand-in installed."""
    install()
    return create_service_app()


if __name__ == "__main__":
    install()
    sys.exit(service_main(sys.argv[1:]))
