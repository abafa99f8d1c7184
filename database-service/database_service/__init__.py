"""database-service: trading signals and closed-trade performance (port 5020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from flask import Flask, Response, current_app

from database_service import meta, performance, signals
from database_service.settings import DEFAULTS, SERVICE, SETTINGS, DatabaseConfig, check
from database_service.state import EXTENSION, ServiceState, service_state
from database_service.storage import (
    Storage,
    StorageExtension,
    StorageUnavailable,
    primary_storage,
    read_storage,
)
from shared.app import create_base_app
from shared.errors import error_response
from shared.health_check import get_health
from shared.lifecycle import on_shutdown
from shared.metrics import get_metrics


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the database-service Flask app; `config` overrides the environment."""
    app = create_base_app(
        "database_service",
        SERVICE,
        config,
        settings=SETTINGS,
        defaults=DEFAULTS,
        check=check,
        typed=DatabaseConfig,
    )
    metrics = get_metrics(app)
    app.extensions[EXTENSION] = ServiceState(
        signals_saved=metrics.counter("signals_saved_total", "Signals stored"),
        trades_tracked=metrics.counter("trades_tracked_total", "Closed trades recorded"),
    )
    StorageExtension(app)
    storage = primary_storage(app)
    on_shutdown(app, storage.close)
    get_health(app).add_check("database", lambda: _database_check(storage))
    reads = read_storage(app)
    get_health(app).add_readiness("database", lambda: _readiness_check(storage, reads))
    if reads is not None:
        on_shutdown(app, reads.close)
        get_health(app).add_check("database_read", lambda: _database_check(reads), critical=False)
    app.register_error_handler(StorageUnavailable, _storage_unavailable)
    for blueprint in (signals.bp, performance.bp, meta.bp):
        app.register_blueprint(blueprint)
    app.cli.command("migrate")(migrate_command)
    app.cli.command("rebuild-stats")(rebuild_stats_command)
    return app


def _database_check(storage: Storage) -> tuple[str, str]:
    storage.ping()
    storage.check_schema()  # readiness: a schema with pending migrations is down (never migrated here)
    return "ok", storage.backend


def _readiness_check(storage: Storage, reads: Storage | None) -> tuple[str, str]:
    """Ready while the primary answers, or the standbys do (reads go on during a failover)."""
    try:
        return _database_check(storage)
    except Exception as primary:
        if reads is None:
            raise
        reads.ping()
        return "ok", f"reads only: the primary is unreachable ({type(primary).__name__})"


def _storage_unavailable(error: StorageUnavailable) -> Response:
    service_state().storage_errors.report(str(error))
    return error_response("unavailable", error.public_message, 503, headers={"Retry-After": "2"})


def run_migrations(app: Flask) -> int:
    """Apply pending migrations and print what happened; return a process exit code."""
    storage = primary_storage(app)
    try:
        applied = storage.migrate()
        current = storage.applied_migrations()
    except StorageUnavailable as exc:
        click.echo(f"migrate: {exc}", err=True)
        return 1
    click.echo(f"applied now: {', '.join(applied) or 'nothing (up to date)'}")
    click.echo(f"schema ({storage.backend}): {', '.join(current)}")
    return 0


@click.pass_context
def migrate_command(ctx: click.Context) -> None:
    """Apply pending database migrations (safe to run twice, or from two processes)."""

    ctx.exit(run_migrations(current_app))


@click.pass_context
def rebuild_stats_command(ctx: click.Context) -> None:
    """Recompute the pre-aggregated trade statistics (after loading trades around the API)."""

    storage = primary_storage(current_app)
    try:
        storage.rebuild_summaries()
    except StorageUnavailable as exc:
        click.echo(f"rebuild-stats: {exc}", err=True)
        ctx.exit(1)
    click.echo(f"statistics rebuilt ({storage.backend})")
