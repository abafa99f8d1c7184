"""POST /signals/save, GET /signals/history and GET /signals/<id> on both backends."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

pytestmark = [pytest.mark.api, pytest.mark.database]


def signal(**fields: Any) -> dict[str, Any]:
    """A valid signal body, with fields overridden."""
    return {"symbol": "BTCUSDT", "action": "BUY", "price": 43250.5, **fields}


def test_save_one_signal_then_read_it_back(client: FlaskClient) -> None:
    body = signal(
        symbol="btcusdt",
        action="sell",
        confidence=0.75,
        strategy="momentum",
        timeframe="4h",
        timestamp="2026-11-24T12:00:00+02:00",
        metadata={"rsi": 71.5, "tags": ["a", "b"]},
    )
    response = client.post("/signals/save", json=body)
    assert response.status_code == 201
    saved = response.get_json()
    assert saved["symbol"] == "BTCUSDT"
    assert saved["action"] == "SELL"
    assert saved["price"] == 43250.5
    assert saved["timestamp"] == "2026-11-24T10:00:00.000000Z"
    assert saved["metadata"] == {"rsi": 71.5, "tags": ["a", "b"]}
    fetched = client.get(f"/signals/{saved['id']}")
    assert fetched.status_code == 200
    assert fetched.get_json() == saved


def test_timestamp_defaults_to_now_and_accepts_epoch_ms(client: FlaskClient) -> None:
    now = client.post("/signals/save", json=signal()).get_json()
    stored = datetime.fromisoformat(now["timestamp"])
    assert abs((datetime.now(UTC) - stored).total_seconds()) < 5
    epoch = client.post("/signals/save", json=signal(timestamp=1795514400123)).get_json()
    assert epoch["timestamp"] == "2026-11-24T10:00:00.123000Z"


def test_unknown_signal_is_404(client: FlaskClient) -> None:
    for path in ("/signals/999999", "/signals/99999999999999999999999", "/signals/abc"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"


def test_batch_is_saved_in_order(client: FlaskClient, rows: Callable[[], tuple[int, int]]) -> None:
    batch = [signal(price=i + 1, strategy=f"s{i % 3}") for i in range(1000)]
    response = client.post("/signals/save", json=batch)
    assert response.status_code == 201
    body = response.get_json()
    assert (body["count"], body["created"]) == (1000, 1000)
    assert [s["price"] for s in body["signals"]] == [float(i + 1) for i in range(1000)]
    assert rows() == (1000, 0)


def test_batch_answers_are_what_reads_answer(client: FlaskClient) -> None:
    """A batch's answer (built from the validated values on PostgreSQL's COPY path) is, key
    order included, what GET /signals/<id> reads back from the database."""
    awkward = ["tab\there", "back\\slash", "new\nline\r", "\\N", "ünï ☃", "a" * 64]
    batch = [
        signal(strategy=text, timeframe="15m", confidence=0, timestamp=1795514400123 + i)
        for i, text in enumerate(awkward)
    ]
    batch += [
        signal(price=5e-324, confidence=1, metadata={"zz": 1e20, "a": 1e-7, "bb": [1.0, "\t\\"], "é": {}}),
        signal(price=999999999999999.9, timestamp="2199-12-31T23:59:59.999999-05:00", metadata={}),
        signal(action="hold", symbol="ethusdt", client_id="batch-key\t1"),
        signal(),
    ]
    response = client.post("/signals/save", json=batch)
    assert response.status_code == 201
    answered = json.loads(response.data)["signals"]
    assert [s["strategy"] for s in answered[: len(awkward)]] == awkward
    for saved in answered:
        fetched = client.get(f"/signals/{saved['id']}")
        assert json.dumps(json.loads(fetched.data)) == json.dumps(saved)
    repeated = client.post(
        "/signals/save", json=[signal(action="hold", symbol="ethusdt", client_id="batch-key\t1")]
    )
    assert repeated.status_code == 200
    assert json.dumps(json.loads(repeated.data)["signals"][0]) == json.dumps(answered[-2])


# Signals as JSON text (numbers exactly as written), each valid or refused alone. A batch
# whose items are all of the common shape (upper-case action, numbers as JSON numbers, a
# price below 999999999999999.9) is validated by pydantic-core alone (models.CoreSignalIn);
# any other item sends the batch through SignalIn.
COMMON_SHAPE = [
    '{"symbol": "btcusdt", "action": "BUY", "price": 100, "confidence": 1}',
    '{"symbol": "Eth2", "action": "SELL", "price": 5e-324, "confidence": 0, "strategy": "s"}',
    '{"symbol": "BTCUSDT", "action": "HOLD", "price": 0.1000000000000000055511151231257827, "confidence": 0.0}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1e-05, "confidence": 0.30000000000000004}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 999999999999999.8, "timeframe": "15m"}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 999999999999999.89, "client_id": "k\\t1"}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 123456789012345.67, "metadata": {"a": 1e20}}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1E2, "timestamp": 1795514400123}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 999999999999999}',
    '{"symbol": "BTCUSDT", "action": "SELL", "price": 2, "confidence": -0.0}',
]
OTHER_SHAPES = [
    '{"symbol": "btcusdt", "action": "buy", "price": 43250.5}',
    '{"symbol": "BTCUSDT", "action": "Hold", "price": 2.5, "confidence": 0.5}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 999999999999999.9}',  # the double is checked
]
REFUSED = [
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 3e-324}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 0}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": -1}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 999999999999999.95}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1000000000000000}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1e999999}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": true}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": "100"}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1, "confidence": 1.00000000000000001}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1, "confidence": -1e-400}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1, "confidence": 2}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1, "confidence": false}',
    '{"symbol": "\u017fbtc", "action": "BUY", "price": 1}',
    '{"symbol": "BTC\\n", "action": "BUY", "price": 1}',
    '{"symbol": "B", "action": "BUY", "price": 1}',
    '{"symbol": 12, "action": "BUY", "price": 1}',
    '{"symbol": "BTCUSDT", "action": "BUYS", "price": 1}',
    '{"symbol": "BTCUSDT", "action": "\u017fELL", "price": 1}',
    '{"symbol": "BTCUSDT", "action": 1, "price": 1}',
    '{"symbol": "BTCUSDT", "price": 1}',
    '{"symbol": "BTCUSDT", "action": "BUY", "price": 1, "extra": 1}',
]


def _post_text(client: FlaskClient, text: str) -> Any:
    return client.post("/signals/save", data=text, content_type="application/json")


def _as_saved(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between two saves of one body (id, times set by the server)."""
    return {k: v for k, v in answer.items() if k not in ("id", "created_at", "timestamp")}


@pytest.mark.parametrize("items", [COMMON_SHAPE, COMMON_SHAPE + OTHER_SHAPES], ids=["common", "mixed"])
def test_a_batch_stores_and_answers_each_item_as_saving_it_alone(client: FlaskClient, items: list[str]) -> None:
    alone = [json.loads(_post_text(client, item).data) for item in items]
    client.post("/signals/save", json={"symbol": "BTCUSDT", "action": "BUY", "price": 1})  # a gap in ids
    batch = _post_text(client, "[" + ", ".join(item.replace('"k', '"b') for item in items) + "]")
    assert batch.status_code == 201
    answered = json.loads(batch.data)["signals"]
    for single, saved in zip(alone, answered, strict=True):
        if single["client_id"] is not None:
            single["client_id"] = "b" + single["client_id"][1:]
        assert json.dumps(_as_saved(saved)) == json.dumps(_as_saved(single))
        fetched = client.get(f"/signals/{saved['id']}")
        assert json.dumps(json.loads(fetched.data)) == json.dumps(saved)


def test_a_confidence_of_minus_zero_is_stored_as_zero_alone_and_in_batches(client: FlaskClient) -> None:
    item = '{"symbol": "BTCUSDT", "action": "SELL", "price": 2, "confidence": -0.0}'
    alone = json.loads(_post_text(client, item).data)
    batch = json.loads(_post_text(client, f"[{item}, {item}]").data)["signals"]
    for saved in (alone, *batch):
        fetched = client.get(f"/signals/{saved['id']}").get_data(as_text=True)
        assert '"confidence":0.0' in fetched, fetched
        assert saved["confidence"] == 0.0
        assert math.copysign(1.0, saved["confidence"]) == 1.0  # not -0.0


@pytest.mark.parametrize("item", REFUSED)
def test_a_batch_refuses_an_item_as_saving_it_alone_does(client: FlaskClient, item: str) -> None:
    alone = _post_text(client, item)
    assert alone.status_code == 400
    batch = _post_text(client, f"[{COMMON_SHAPE[0]}, {item}]")
    assert batch.status_code == 400
    expected = [{**d, "field": f"[1].{d['field']}"} for d in json.loads(alone.data)["details"]]
    assert json.loads(batch.data)["details"] == expected
    assert _post_text(client, f"[{COMMON_SHAPE[0]}, {item}]").status_code == 400


def test_single_saves_with_client_id_answer_what_reads_answer(client: FlaskClient) -> None:
    """The one-statement keyed save (claim and insert together) answers every column as
    stored, with and without the optional fields; a repeat answers the same signal."""
    bodies = [
        signal(
            client_id="one-full", confidence=0.25, strategy="s\\t", timeframe="1d", metadata={"b": 1e20, "a": 1}
        ),
        signal(client_id="one-bare"),
    ]
    for body in bodies:
        first = client.post("/signals/save", json=body)
        assert first.status_code == 201
        fetched = client.get(f"/signals/{first.get_json()['id']}")
        assert json.dumps(json.loads(fetched.data)) == json.dumps(json.loads(first.data))
        again = client.post("/signals/save", json=body)
        assert again.status_code == 200
        assert json.dumps(json.loads(again.data)) == json.dumps(json.loads(first.data))


def test_client_id_is_idempotent(client: FlaskClient, rows: Callable[[], tuple[int, int]]) -> None:
    first = client.post("/signals/save", json=signal(client_id="order-1", strategy="m", metadata={"a": 1}))
    # the same request as a client would retry it: case, a number written otherwise, no timestamp
    again = signal(client_id="order-1", symbol="btcusdt", action="buy", price=43250.50, strategy="m")
    second = client.post("/signals/save", json={**again, "metadata": {"a": 1.0}})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json() == first.get_json()
    assert rows() == (1, 0)


def test_a_client_id_reused_with_another_body_is_a_422_naming_key_and_fields(
    client: FlaskClient, rows: Callable[[], tuple[int, int]]
) -> None:
    first = client.post("/signals/save", json=signal(client_id="order-1", strategy="m"))
    assert first.status_code == 201
    reused = client.post("/signals/save", json=signal(client_id="order-1", price=1, strategy=None))
    assert reused.status_code == 422
    error = reused.get_json()
    assert error["error"] == "idempotency_conflict"
    assert '"order-1"' in error["message"]
    assert [d["field"] for d in error["details"]] == ["price", "strategy"]
    # an explicit timestamp other than the stored one is a difference too
    at = client.post("/signals/save", json=signal(client_id="order-1", strategy="m", timestamp=1767225600000))
    assert [d["field"] for d in at.get_json()["details"]] == ["timestamp"]
    assert rows() == (1, 0)
    assert client.get(f"/signals/{first.get_json()['id']}").get_json() == first.get_json()


def test_a_batch_with_one_conflicting_item_stores_nothing(
    client: FlaskClient, rows: Callable[[], tuple[int, int]]
) -> None:
    assert client.post("/signals/save", json=signal(client_id="a")).status_code == 201
    batch = [signal(client_id="new-1"), signal(), signal(client_id="a", action="SELL"), signal(client_id="a")]
    answer = client.post("/signals/save", json=batch)
    assert answer.status_code == 422
    error = answer.get_json()
    assert error["error"] == "idempotency_conflict"
    assert error["details"] == [
        {"field": "[2].action", "message": "differs from the stored signal with client_id a"}
    ]
    assert rows() == (1, 0)  # neither new-1 nor the key-less signal was stored
    # within one batch, a key twice with different bodies conflicts with itself
    twice = client.post("/signals/save", json=[signal(client_id="c"), signal(client_id="c", price=2)])
    assert twice.status_code == 422
    assert [d["field"] for d in twice.get_json()["details"]] == ["[1].price"]
    assert rows() == (1, 0)


@pytest.mark.slow  # twenty threads
def test_concurrent_duplicate_client_id_is_stored_once(
    make_app: Callable[..., Flask], rows: Callable[[], tuple[int, int]]
) -> None:
    app = make_app(RATE_LIMIT_ENABLED=False)
    start = threading.Barrier(20)

    def post(n: int) -> tuple[int, Any]:
        client = app.test_client()
        start.wait(timeout=30)  # all twenty leave together
        response = client.post("/signals/save", json=signal(client_id="race-1", price=100))
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(post, range(20)))
    assert sorted(status for status, _ in answers) == [200] * 19 + [201], answers
    stored = {json.dumps(body, sort_keys=True) for _, body in answers}
    assert len(stored) == 1  # every answer is the one stored signal
    assert rows() == (1, 0)


def test_client_id_in_batches(client: FlaskClient, rows: Callable[[], tuple[int, int]]) -> None:
    client.post("/signals/save", json=signal(client_id="a"))
    batch = [signal(client_id="a"), signal(client_id="b"), signal(client_id="b"), signal()]
    body = client.post("/signals/save", json=batch).get_json()
    assert body["created"] == 2
    ids = [s["id"] for s in body["signals"]]
    assert ids[1] == ids[2]
    assert len(set(ids)) == 3
    repeat = client.post("/signals/save", json=[signal(client_id="a"), signal(client_id="b")])
    assert repeat.status_code == 200
    assert rows() == (3, 0)


def test_sql_injection_strings_are_stored_verbatim(client: FlaskClient) -> None:
    evil = "x'); DROP TABLE signals; --"
    saved = client.post(
        "/signals/save", json=signal(strategy=evil, client_id=evil, metadata={evil: evil})
    ).get_json()
    assert saved["strategy"] == evil
    assert saved["metadata"] == {evil: evil}
    found = client.get("/signals/history", query_string={"strategy": evil}).get_json()
    assert [s["id"] for s in found["signals"]] == [saved["id"]]
    assert client.get("/signals/history", query_string={"strategy": "' OR '1'='1"}).get_json()["count"] == 0


def test_history_filters(client: FlaskClient) -> None:
    batch = [
        signal(symbol="BTCUSDT", action="BUY", strategy="a", timestamp="2026-11-20T00:00:00Z"),
        signal(symbol="ETHUSDT", action="SELL", strategy="a", timestamp="2026-11-21T00:00:00Z"),
        signal(symbol="ETHUSDT", action="HOLD", strategy="b", timestamp="2026-11-22T00:00:00Z"),
    ]
    client.post("/signals/save", json=batch)

    def symbols(**params: str) -> list[str]:
        body = client.get("/signals/history", query_string=params).get_json()
        return [f"{s['symbol']}/{s['action']}" for s in body["signals"]]

    assert symbols() == ["ETHUSDT/HOLD", "ETHUSDT/SELL", "BTCUSDT/BUY"]
    assert symbols(symbol="ethusdt") == ["ETHUSDT/HOLD", "ETHUSDT/SELL"]
    assert symbols(strategy="a") == ["ETHUSDT/SELL", "BTCUSDT/BUY"]
    assert symbols(action="buy") == ["BTCUSDT/BUY"]
    assert symbols(since="2026-11-21T00:00:00Z") == ["ETHUSDT/HOLD", "ETHUSDT/SELL"]
    assert symbols(until="2026-11-21T00:00:00Z") == ["BTCUSDT/BUY"]
    assert symbols(since="1795219200000", until="1795305600000") == ["ETHUSDT/SELL"]


def test_history_pages_with_cursor(client: FlaskClient) -> None:
    same_time = "2026-11-24T10:00:00Z"  # ties are broken by id
    client.post("/signals/save", json=[signal(price=i + 1, timestamp=same_time) for i in range(25)])
    seen: list[float] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        body = client.get("/signals/history", query_string=params).get_json()
        seen += [s["price"] for s in body["signals"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [float(p) for p in range(25, 0, -1)]


def test_history_default_limit_is_100(client: FlaskClient) -> None:
    client.post("/signals/save", json=[signal() for _ in range(150)])
    body = client.get("/signals/history").get_json()
    assert body["count"] == 100
    assert body["next_cursor"] is not None


def delete_row(database_url: str, table: str, row_id: int) -> None:
    """Delete one row behind the service's back, as a retention policy would."""
    if database_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
        conn.close()
        return
    import psycopg2

    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,))
    conn.close()


def test_a_client_id_whose_row_was_deleted_saves_anew_never_a_500(
    client: FlaskClient, database_url: str
) -> None:
    kept = client.post("/signals/save", json=signal(client_id="kept")).get_json()
    for key in ("gone-batch", "gone-single"):
        delete_row(
            database_url, "signals", client.post("/signals/save", json=signal(client_id=key)).get_json()["id"]
        )
    batch = [
        signal(client_id="kept"),
        signal(client_id="gone-batch", price=2),
        signal(client_id="gone-batch", price=2),
    ]
    answer = client.post("/signals/save", json=batch)
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["created"] == 1
    ids = [s["id"] for s in body["signals"]]
    assert ids[0] == kept["id"]
    assert ids[1] == ids[2] != kept["id"]
    assert client.get(f"/signals/{ids[1]}").get_json()["price"] == 2
    single = client.post("/signals/save", json=signal(client_id="gone-single"))
    assert single.status_code == 201, single.get_json()
    trade = {"symbol": "BTCUSDT", "entry_price": 100, "exit_price": 110, "client_id": "gone-trade"}
    delete_row(database_url, "trades", client.post("/performance/track", json=trade).get_json()["id"])
    again = client.post("/performance/track", json=trade)
    assert again.status_code == 201, again.get_json()
