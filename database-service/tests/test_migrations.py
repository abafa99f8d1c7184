"""Migrations: at start-up, by the CLI, twice, and from two processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from database_service.storage import open_storage
from flask.testing import FlaskCliRunner
from sardag_testing import scratch_postgres

pytestmark = pytest.mark.database

MAIN = Path(__file__).resolve().parents[2]
RACE = """
import sys, time
from database_service.storage import open_storage
storage = open_storage(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(",".join(storage.migrate()) or "-")
storage.close()
"""


def _child_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_KEY", "REDIS_URL"))}
    env.update(DATABASE_URL=url, LOG_LEVEL="WARNING", PYTHONPATH=str(MAIN))
    return env


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", marks=[pytest.mark.integration, pytest.mark.slow]),
    ]
)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database that no migration has touched yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/new/dir/sardag.db"
        return
    with scratch_postgres(request.getfixturevalue("postgres_url"), "sardag_mig") as url:
        yield url


def _expected(url: str) -> list[str]:
    """Every shipped migration, but TimescaleDB's only where the extension exists."""
    if url.startswith("sqlite"):
        return ["0001_initial", "0002_stats_version"]
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        available = cur.fetchone() is not None
    conn.close()
    timescale = ["0002_timescaledb"] if available else []
    return ["0001_initial", *timescale, "0003_trade_buckets", "0004_stats_version", "0005_commit_deadline"]


def test_migrate_twice_is_a_no_op(fresh_url: str) -> None:
    storage = open_storage(fresh_url)
    try:
        assert storage.migrate() == _expected(fresh_url)
        assert storage.migrate() == []
        assert storage.applied_migrations() == _expected(fresh_url)
    finally:
        storage.close()


@pytest.mark.unit
def test_sqlite_file_created_on_first_start(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/a/b/sardag.db")
    try:
        storage.migrate()
        assert (tmp_path / "a" / "b" / "sardag.db").is_file()
    finally:
        storage.close()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("fresh_url", ["sqlite", "postgresql"], indirect=True)  # processes: integration
def test_two_processes_migrate_at_once(fresh_url: str) -> None:
    start_at = str(time.time() + 2.0)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, fresh_url, start_at],
            env=_child_env(fresh_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], results
    outputs = sorted(out.strip() for out, _ in results)
    assert outputs == ["-", ",".join(_expected(fresh_url))]  # exactly one of them applied them
    storage = open_storage(fresh_url)
    try:
        assert storage.applied_migrations() == _expected(fresh_url)
    finally:
        storage.close()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_timescaledb_migration_waits_for_the_extension(fresh_url: str) -> None:
    conn = psycopg2.connect(fresh_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        available = cur.fetchone() is not None
    conn.close()
    storage = open_storage(fresh_url)
    try:
        storage.migrate()
        assert ("0002_timescaledb" in storage.applied_migrations()) == available
        assert storage.backend == ("timescaledb" if available else "postgresql")
    finally:
        storage.close()


def test_flask_cli_migrate(runner: FlaskCliRunner, backend: str) -> None:
    result = runner.invoke(args=["migrate"])
    assert result.exit_code == 0, result.output
    assert "nothing (up to date)" in result.output  # start-up already applied it
    assert f"schema ({backend}): 0001_initial" in result.output


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("fresh_url", ["sqlite", "postgresql"], indirect=True)  # processes: integration
def test_python_m_migrate(fresh_url: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "database_service", "migrate"]
    first = subprocess.run(
        command, env=_child_env(fresh_url), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    assert f"applied now: {', '.join(_expected(fresh_url))}" in first.stdout
    second = subprocess.run(
        command, env=_child_env(fresh_url), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "applied now: nothing (up to date)" in second.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_python_m_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:1/nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "database_service", "migrate"],
        env=_child_env(url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "migrate: postgresql" in result.stderr


def test_flask_cli_rebuild_stats(runner: FlaskCliRunner, backend: str) -> None:
    result = runner.invoke(args=["rebuild-stats"])
    assert result.exit_code == 0, result.output
    assert f"statistics rebuilt ({backend})" in result.output
