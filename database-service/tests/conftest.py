"""Fixtures: one app per test, parametrised over SQLite and the real PostgreSQL server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from database_service import create_app
from flask import Flask
from flask.testing import FlaskClient
from sardag_testing import scratch_postgres

from shared.lifecycle import shutdown

PG_TABLES = "signals, trades, signal_client_ids, trade_client_ids, trade_buckets"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test not marked otherwise is `unit` on SQLite (in the test process) and `integration`
    on PostgreSQL (a real server), decided by the `database_url` backend it runs on."""
    here = Path(__file__).parent
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec is not None else None
        marked = item.get_closest_marker("unit") or item.get_closest_marker("integration")
        if marked or backend not in ("sqlite", "postgresql") or not item.path.is_relative_to(here):
            continue
        item.add_marker(pytest.mark.integration if backend == "postgresql" else pytest.mark.unit)


@pytest.fixture(scope="session")
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    with scratch_postgres(postgres_url, f"sardag_test_{os.getpid()}") as url:
        yield url


def truncate_postgres(url: str) -> None:
    """Empty every table (after a first migration has created them)."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('signals') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute(f"TRUNCATE {PG_TABLES} RESTART IDENTITY")
    finally:
        conn.close()


@pytest.fixture
def pg_empty(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied."""
    truncate_postgres(pg_database)
    return pg_database


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """DATABASE_URL of an empty database: a new SQLite file, or the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/sardag.db"
    url = request.getfixturevalue("pg_database")
    truncate_postgres(url)
    return url


@pytest.fixture
def backend(database_url: str) -> str:
    """sqlite or postgresql, as the app reports it here."""
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps on the test database; every one is shut down (pool closed) afterwards."""
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        config = {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "REDIS_URL": None,
            "API_KEY": None,
            "LOG_LEVEL": "WARNING",
            **overrides,
        }
        app = create_app(config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        shutdown(app)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """The app with default settings (rate limits on, no API key, in-process cache)."""
    return make_app()


@pytest.fixture
def rows(client: FlaskClient) -> Callable[[], tuple[int, int]]:
    """A function returning (signals, trades) as /stats reports them."""

    def count() -> tuple[int, int]:
        body = client.get("/stats").get_json()
        return body["signals"], body["trades"]

    return count
