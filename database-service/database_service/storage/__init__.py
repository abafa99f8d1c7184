"""Storage extension: picks the backend from the DATABASE_URL scheme."""

from __future__ import annotations

import atexit
import logging
import weakref
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import Flask, current_app

from database_service.settings import POOL_SIZE, DatabaseConfig
from database_service.storage.base import (
    NewSignal,
    NewTrade,
    SignalFilter,
    StatsAggregate,
    Storage,
    StorageError,
    StorageUnavailable,
    TradeFilter,
)
from shared.app import typed_config

if TYPE_CHECKING:
    from database_service.storage.pg_pool import Timeouts

__all__ = [
    "NewSignal",
    "NewTrade",
    "SignalFilter",
    "StatsAggregate",
    "Storage",
    "StorageError",
    "StorageExtension",
    "StorageUnavailable",
    "TradeFilter",
    "get_read_storage",
    "get_storage",
    "open_storage",
    "primary_storage",
    "read_storage",
]

log = logging.getLogger(__name__)

EXTENSION, READ_EXTENSION = "storage", "read_storage"
SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg2": "postgresql",
}


def open_storage(url: str, settings: DatabaseConfig | None = None) -> Storage:
    """Create the backend for a DATABASE_URL (sqlite:///path or postgresql://..., multi-host too).

    `settings`: the app's typed configuration, of which the DATABASE_* pool and timeout
    settings apply (without it, their defaults).
    """
    scheme = SCHEMES.get(urlsplit(url).scheme.lower())
    if scheme == "sqlite":
        from database_service.storage.sqlite import SQLiteStorage

        return SQLiteStorage(url)
    if scheme == "postgresql":
        from database_service.storage.pg_pool import Timeouts
        from database_service.storage.postgres import PostgresStorage

        pool_size = POOL_SIZE if settings is None else settings.database_pool_size
        timeouts = Timeouts() if settings is None else _timeouts(settings)
        return PostgresStorage(_libpq_url(url), pool_size=pool_size, timeouts=timeouts)
    raise ValueError("DATABASE_URL: scheme must be sqlite:// or postgresql://")


def _timeouts(settings: DatabaseConfig) -> Timeouts:
    from database_service.storage.pg_pool import Timeouts

    return Timeouts(
        connect=settings.database_connect_timeout,
        statement=settings.database_statement_timeout,
        lock=settings.database_lock_timeout,
        request=settings.database_timeout,
        keepalives_idle=settings.database_keepalives_idle,
        keepalives_interval=settings.database_keepalives_interval,
        keepalives_count=settings.database_keepalives_count,
    )


def _libpq_url(url: str) -> str:
    """libpq understands postgresql:// and postgres:// only."""
    scheme, rest = url.split("://", 1)
    return url if scheme.lower() in ("postgresql", "postgres") else f"postgresql://{rest}"


def _close_if_alive(ref: weakref.ref[Storage]) -> None:
    storage = ref()
    if storage is not None:
        storage.close()


class StorageExtension:
    """Flask extension: `primary_storage(app)` is the Storage backend, `read_storage(app)` the standbys'."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Open the backend (and the read one) and apply migrations unless MIGRATE_ON_START is false.

        With MIGRATE_ON_START false nothing in this process ever migrates: pending
        migrations are one error line at start, then a 503 for every request and an
        unhealthy /health until `python -m database_service migrate` has run.
        """
        settings = typed_config(DatabaseConfig, app)
        storage = open_storage(settings.database_url, settings)
        app.extensions[EXTENSION] = storage
        # The pool closes when the process exits, even without gunicorn's worker_exit hook.
        atexit.register(_close_if_alive, weakref.ref(storage))
        if settings.database_read_url:
            reads = open_storage(settings.database_read_url, settings)
            reads.schema_ready = True  # the primary's schema, replicated: never migrated from here
            reads.migrates = False
            app.extensions[READ_EXTENSION] = reads
            atexit.register(_close_if_alive, weakref.ref(reads))
        storage.migrates = settings.migrate_on_start
        if storage.migrates:
            self._migrate_on_start(storage)
        else:
            self._check_on_start(storage)

    @staticmethod
    def _migrate_on_start(storage: Storage) -> None:
        try:
            applied = storage.migrate()
            storage.schema_ready = True
        except StorageUnavailable as exc:
            # Start anyway: /health reports the database down and requests answer 503.
            log.error("migrations not applied at start-up: %s", exc)
            return
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))

    @staticmethod
    def _check_on_start(storage: Storage) -> None:
        try:
            storage.check_schema()
        except StorageUnavailable as exc:  # SchemaPending included: its message says what to do
            log.error("database schema not ready at start-up: %s", exc)


def primary_storage(app: Flask | None = None) -> Storage:
    """The primary backend of `app` (default: the current app) as opened: no schema check."""
    storage: Storage = (app or current_app).extensions[EXTENSION]
    return storage


def read_storage(app: Flask | None = None) -> Storage | None:
    """The DATABASE_READ_URL backend of `app` (default: the current app); None without one."""
    reads: Storage | None = (app or current_app).extensions.get(READ_EXTENSION)
    return reads


def get_storage() -> Storage:
    """The current app's storage backend, its schema migrated."""
    storage = primary_storage()
    storage.ensure_schema()
    return storage


def get_read_storage() -> Storage:
    """Where reads that may lag go: DATABASE_READ_URL's servers if set, else the primary."""
    reads = read_storage()
    return reads if reads is not None else get_storage()
