"""The price bounds the document states, and storage of exactly what was acknowledged.

Found by schemathesis: a price of 5e-324 (a valid positive number) was refused. Now every
positive double below 1e15 is a price, stored as that double on SQLite (REAL) and on
PostgreSQL (NUMERIC), so the acknowledgement, a read by id and the history all agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from database_service import create_app
from flask.testing import FlaskClient
from sardag_testing import scratch_postgres

from shared.app import shutdown

pytestmark = [pytest.mark.api, pytest.mark.database]

# As JSON text: the last one has more digits than a double holds.
PRICES = [
    "5e-324",
    "2.2250738585072014e-308",
    "1e-18",
    "0.1",
    "42",
    "999999999999999.9",
    "0.12345678901234567890123",
]


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", marks=[pytest.mark.integration]),
    ]
)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FlaskClient]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bounds.db'}"
        app = create_app({"DATABASE_URL": url, "SENTRY_DSN": "", "REDIS_URL": None, "LOG_LEVEL": "WARNING"})
        yield app.test_client()
        shutdown(app)
        return
    with scratch_postgres(request.getfixturevalue("postgres_url"), "sardag_bounds") as url:
        app = create_app({"DATABASE_URL": url, "SENTRY_DSN": "", "REDIS_URL": None, "LOG_LEVEL": "WARNING"})
        yield app.test_client()
        shutdown(app)


def _save(client: FlaskClient, price_text: str) -> tuple[int, dict[str, object]]:
    raw = '{"symbol": "BTCUSDT", "action": "BUY", "price": ' + price_text + "}"
    response = client.post("/signals/save", data=raw, content_type="application/json")
    return response.status_code, response.get_json()


@pytest.mark.parametrize("price_text", PRICES)
def test_every_positive_double_is_stored_as_acknowledged(client: FlaskClient, price_text: str) -> None:
    status, saved = _save(client, price_text)
    assert status == 201, saved
    assert saved["price"] == float(price_text)  # the nearest double, as the document says
    read = client.get(f"/signals/{saved['id']}").get_json()
    page = client.get("/signals/history?limit=1").get_json()["signals"][0]
    assert read["price"] == page["price"] == saved["price"]
    assert json.dumps(read["price"]) == json.dumps(float(price_text))


@pytest.mark.parametrize(
    "price_text", ["0", "-5e-324", "2e-324", "1e-400", "1e15", "999999999999999.99", "1e999999999"]
)
def test_prices_outside_the_stated_bounds_are_400(client: FlaskClient, price_text: str) -> None:
    status, answer = _save(client, price_text)
    assert status == 400
    assert [d["field"] for d in answer["details"]] == ["price"]


def test_the_smallest_trade_amounts_give_finite_figures(client: FlaskClient) -> None:
    trade = {"symbol": "BTCUSDT", "entry_price": 1e-18, "exit_price": 999999999999999.9, "quantity": 1e-18}
    response = client.post("/performance/track", json={**trade, "fees": 5e-324})
    assert response.status_code == 201, response.get_json()
    stored = response.get_json()
    assert stored["outcome"] == "win"
    assert 0 < stored["pnl_percent"] < 1e308
    assert client.get("/performance/stats").get_json()["total_trades"] == 1
    below = client.post("/performance/track", json={**trade, "entry_price": 1e-19})
    assert below.status_code == 400


def test_a_whole_number_written_with_a_fraction_is_an_integer(client: FlaskClient) -> None:
    """JSON Schema's integer includes 7.0 (schemathesis sent it): signal_id takes it as 7."""
    trade = {"symbol": "BTCUSDT", "entry_price": 1, "exit_price": 2}
    assert client.post("/performance/track", json={**trade, "signal_id": 7.0}).get_json()["signal_id"] == 7
    assert client.post("/performance/track", json={**trade, "signal_id": 7.5}).status_code == 400
