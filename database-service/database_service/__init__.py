"""database-service: trading signals and closed-trade performance (port 5020)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click
from flask import Flask, Response, current_app
from prometheus_client import Counter

from database_service import meta, performance, signals
from database_service.settings import DEFAULTS, SERVICE, SETTINGS, DatabaseConfig, check
from database_service.storage import Storage, StorageExtension, StorageUnavailable
from shared.app import create_base_app
from shared.errors import error_response
from shared.health_check import get_health
from shared.lifecycle import on_shutdown
from shared.metrics import ServiceMetric, get_metrics

log = logging.getLogger(__name__)


@dataclass
class ReasonLog:
    """Logs why the database fails: a new reason at once, the same one at most every `interval` s.

    During an outage every request fails the same way; one line per request would bury the
    cause, and none would leave the operator with nothing but 503s in the access log.
    """

    interval: float = 10.0
    last: tuple[str, float] = ("", -math.inf)

    def report(self, reason: str) -> None:
        """Log `reason` unless it was logged less than `interval` seconds ago."""
        now = time.monotonic()
        if reason != self.last[0] or now - self.last[1] >= self.interval:
            self.last = (reason, now)
            log.warning("database unavailable, answering 503: %s", reason)


@dataclass
class ServiceState:
    """Per-app state of database-service: its metrics, start time and storage error log."""

    signals_saved: ServiceMetric[Counter]
    trades_tracked: ServiceMetric[Counter]
    started: float = field(default_factory=time.monotonic)
    storage_errors: ReasonLog = field(default_factory=ReasonLog)
    stats_counts: meta.Recent = field(default_factory=lambda: meta.Recent(meta.COUNTS_MAX_AGE))

    def stored(self, signals: int = 0, trades: int = 0) -> None:
        """Count rows this worker stored; its /stats counts them from the next call on."""
        if signals:
            self.signals_saved.inc(signals)
        if trades:
            self.trades_tracked.inc(trades)
        self.stats_counts.invalidate()


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
    app.extensions["database_service"] = ServiceState(
        signals_saved=metrics.counter("signals_saved_total", "Signals stored"),
        trades_tracked=metrics.counter("trades_tracked_total", "Closed trades recorded"),
    )
    StorageExtension(app)
    storage: Storage = app.extensions["storage"]
    on_shutdown(app, storage.close)
    get_health(app).add_check("database", lambda: _database_check(storage))
    reads: Storage | None = app.extensions.get("read_storage")
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
    state: ServiceState = current_app.extensions["database_service"]
    state.storage_errors.report(str(error))
    return error_response("unavailable", error.public_message, 503, headers={"Retry-After": "2"})


def run_migrations(app: Flask) -> int:
    """Apply pending migrations and print what happened; return a process exit code."""
    storage: Storage = app.extensions["storage"]
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
    from flask import current_app

    ctx.exit(run_migrations(current_app))


@click.pass_context
def rebuild_stats_command(ctx: click.Context) -> None:
    """Recompute the pre-aggregated trade statistics (after loading trades around the API)."""
    from flask import current_app

    storage: Storage = current_app.extensions["storage"]
    try:
        storage.rebuild_summaries()
    except StorageUnavailable as exc:
        click.echo(f"rebuild-stats: {exc}", err=True)
        ctx.exit(1)
    click.echo(f"statistics rebuilt ({storage.backend})")
