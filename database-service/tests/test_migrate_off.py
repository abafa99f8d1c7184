"""MIGRATE_ON_START=0: nothing in the service migrates; pending migrations make it unready."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from database_service import create_app
from database_service.storage import open_storage
from flask import Flask
from sardag_testing import scratch_postgres

from shared.lifecycle import shutdown

pytestmark = [pytest.mark.database, pytest.mark.api]
SIGNAL = {"symbol": "BTCUSDT", "action": "BUY", "price": 1.5}


def admin(url: str, *statements: str) -> None:
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def has_table(url: str, name: str) -> bool:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def data_only(postgres_url: str) -> Iterator[tuple[str, str]]:
    """(owner URL, URL of a role with data privileges only) of a fresh, unmigrated database."""
    role = f"sardag_data_{uuid.uuid4().hex[:8]}"
    admin(postgres_url, f"CREATE ROLE {role} LOGIN PASSWORD 'data-only-pw'")
    try:
        with scratch_postgres(postgres_url, "sardag_dataonly") as owner_url:
            admin(
                owner_url,
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",  # noqa: E501
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
            )
            parts = urlsplit(owner_url)
            netloc = f"{role}:data-only-pw@{parts.hostname}:{parts.port or 5432}"
            yield owner_url, urlunsplit(parts._replace(netloc=netloc))
    finally:
        admin(postgres_url, f"DROP ROLE IF EXISTS {role}")


def off(url: str) -> dict[str, object]:
    """Test settings with MIGRATE_ON_START=0 on `url`."""
    return {"TESTING": True, "DATABASE_URL": url, "MIGRATE_ON_START": False, "REDIS_URL": None}


@pytest.fixture
def app_on() -> Iterator[list[Flask]]:
    """The apps a test made, shut down after it."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        shutdown(app)


@pytest.mark.integration
@pytest.mark.slow
def test_a_data_only_role_gets_503_and_an_unready_health_until_migrated_never_a_migration(
    data_only: tuple[str, str], app_on: list[Flask], caplog: pytest.LogCaptureFixture
) -> None:
    owner_url, role_url = data_only
    with caplog.at_level(logging.ERROR, logger="database_service.storage"):
        app = create_app(off(role_url))
    app_on.append(app)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # one clear line at start, naming the way out
    assert "migrations pending: 0001_initial" in errors[0]
    assert "python -m database_service migrate" in errors[0]
    client = app.test_client()
    for _ in range(3):
        answer = client.post("/signals/save", json=SIGNAL)
        assert answer.status_code == 503, answer.get_json()
        assert answer.get_json()["error"] == "unavailable"
        assert "schema" in answer.get_json()["message"]
        assert client.get("/signals/history").status_code == 503
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["checks"]["database"]["status"] == "down"
    assert not has_table(owner_url, "schema_migrations")  # no request tried to migrate

    storage = open_storage(owner_url)  # the operator's migration job, as the owner
    storage.migrate()
    storage.close()
    time.sleep(2.1)  # a pending answer is kept for 2 s
    assert client.get("/health").status_code == 200
    assert client.post("/signals/save", json=SIGNAL).status_code == 201


@pytest.mark.unit
def test_sqlite_with_migrate_on_start_off_never_creates_the_schema(tmp_path: Path, app_on: list[Flask]) -> None:
    url = f"sqlite:///{tmp_path}/off.db"
    app = create_app(off(url))
    app_on.append(app)
    client = app.test_client()
    assert client.post("/signals/save", json=SIGNAL).status_code == 503
    assert client.get("/health").status_code == 503
    assert open_storage(url).applied_migrations() == []  # nothing was migrated by the requests
