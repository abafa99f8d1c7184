"""/stats and /health are public: bounded cost, a limit, and nothing about where the database is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from database_service import create_app
from flask import Flask
from flask.testing import FlaskClient
from sardag_testing import free_port

from shared.lifecycle import shutdown

pytestmark = [pytest.mark.api, pytest.mark.database]
SIGNAL = {"symbol": "BTCUSDT", "action": "BUY", "price": 1.5}


def test_stats_counts_rows_at_most_every_10_s_except_after_its_own_writes(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = app.extensions["storage"]
    counted = []
    real = storage.counts
    monkeypatch.setattr(storage, "counts", lambda: counted.append(1) or real())
    for _ in range(20):  # a client polling (or flooding) /stats
        assert client.get("/stats").status_code == 200
    assert len(counted) == 1
    client.post("/signals/save", json=[SIGNAL, SIGNAL])
    assert client.get("/stats").get_json()["signals"] == 2  # this worker's write: counted at once
    assert len(counted) == 2


@pytest.mark.slow  # 61 requests
def test_stats_has_the_default_limit(client: FlaskClient) -> None:
    statuses = [client.get("/stats").status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60
    assert statuses[60] == 429


@pytest.mark.parametrize(
    "where",
    [pytest.param("sqlite", marks=pytest.mark.unit), pytest.param("postgresql", marks=pytest.mark.integration)],
)
def test_health_names_no_host_port_user_or_path_of_a_failing_database(tmp_path: Path, where: str) -> None:
    port = free_port()  # nothing listens there: the check fails with the driver's message
    url = {
        "sqlite": f"sqlite:///{tmp_path}/no-such-dir/secret-place.db",
        "postgresql": f"postgresql://dbuser-xyz@127.0.0.1:{port}/sardag?connect_timeout=1",
    }[where]
    app = create_app({"TESTING": True, "DATABASE_URL": url, "MIGRATE_ON_START": False, "REDIS_URL": None})
    try:
        body = app.test_client().get("/health")
    finally:
        shutdown(app)
    assert body.status_code == 503
    text = json.dumps(body.get_json())
    for leak in ("dbuser-xyz", str(port), "127.0.0.1", "secret-place", str(tmp_path)):
        assert leak not in text, text
