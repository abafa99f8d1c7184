"""Item 1: an optional migration during which the server ends the session (TimescaleDB not preloaded).

On a server where TimescaleDB is installed but not in `shared_preload_libraries`,
`CREATE EXTENSION timescaledb` ends the session with FATAL. The stand-in migration 0002 of
`preload_probe_app` does the same (`pg_terminate_backend(pg_backend_pid())` unless
`pg_stat_statements` is preloaded), on a private cluster.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sardag_testing import wait_until
from sardag_testing.processes import SOURCE_PATH, Launcher, Running, http, service_env
from sardag_testing.servers import PrivatePostgres

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.api]

HERE = Path(__file__).resolve().parent
APP = "preload_probe_app:create_app()"
PLAIN = ["0001_initial", "0003_trade_buckets", "0004_stats_version", "0005_commit_deadline"]
FIX = "add 'pg_stat_statements' to shared_preload_libraries"
SIGNAL = {"symbol": "BTCUSDT", "action": "BUY", "price": 100.5, "strategy": "preload"}


def applied(pg: PrivatePostgres) -> list[str]:
    """The migrations schema_migrations records, oldest first."""
    rows = pg.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    return [f"{version:04d}_{name}" for version, name in rows]


def warnings_naming_the_fix(server: Running) -> list[str]:
    """The log lines that tell the operator to preload the library."""
    return [line for line in server.log_text().splitlines() if FIX in line]


def start_service(launcher: Launcher, pg: PrivatePostgres) -> Running:
    """database-service (two workers) on `pg`, with the stand-in migration 0002."""
    return launcher.gunicorn(
        "database-service", workers=2, app=APP, pythonpath=(HERE, *SOURCE_PATH), DATABASE_URL=pg.url
    )


def preload_and_restart(pg: PrivatePostgres) -> None:
    """What the operator does after reading the warning."""
    pg.stop()
    pg.configure(shared_preload_libraries="pg_stat_statements")
    pg.start()


def test_service_starts_on_the_plain_schema_then_applies_0002_once_preloaded(
    launcher: Launcher, private_postgres: Callable[..., PrivatePostgres]
) -> None:
    pg = private_postgres()
    first = start_service(launcher, pg)
    status, body = http("POST", f"{first.url}/signals/save", SIGNAL)
    assert status == 201, body
    assert applied(pg) == PLAIN
    wait_until(lambda: warnings_naming_the_fix(first), 10, "the warning naming the fix")
    assert len(warnings_naming_the_fix(first)) == 1, first.log_text()  # two workers, one warning
    assert "Traceback" not in first.log_text()
    first.stop()

    # Started again on the same server: 0002 is not tried again (the server has not restarted).
    second = start_service(launcher, pg)
    assert http("POST", f"{second.url}/signals/save", SIGNAL)[0] == 201
    assert not warnings_naming_the_fix(second), second.log_text()
    second.stop()

    preload_and_restart(pg)
    third = start_service(launcher, pg)
    assert applied(pg) == ["0001_initial", "0002_preload_probe", *PLAIN[1:]]
    assert http("POST", f"{third.url}/signals/save", SIGNAL)[0] == 201
    status, history = http("GET", f"{third.url}/signals/history?strategy=preload")
    assert status == 200
    assert len(history["signals"]) == 3, history
    assert not warnings_naming_the_fix(third)


def run_migrate(pg: PrivatePostgres, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m database_service migrate`, with the stand-in migration 0002."""
    env = service_env(tmp_path, DATABASE_URL=pg.url)
    command = [sys.executable, str(HERE / "preload_probe_app.py"), "migrate"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_migrate_cli_applies_the_rest_and_names_the_fix(
    private_postgres: Callable[..., PrivatePostgres], tmp_path: Path
) -> None:
    pg = private_postgres()
    first = run_migrate(pg, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert f"applied now: {', '.join(PLAIN)}" in first.stdout
    assert first.stderr.count(FIX) == 1, first.stderr

    again = run_migrate(pg, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "applied now: nothing (up to date)" in again.stdout
    assert FIX not in again.stderr

    preload_and_restart(pg)
    last = run_migrate(pg, tmp_path)
    assert last.returncode == 0, last.stderr
    assert "applied now: 0002_preload_probe" in last.stdout
    assert f"schema (postgresql): 0001_initial, 0002_preload_probe, {', '.join(PLAIN[1:])}" in last.stdout
