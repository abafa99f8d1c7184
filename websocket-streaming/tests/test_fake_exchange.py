"""The fake exchange speaks Binance's protocol: streams, SUBSCRIBE replies, REST, limits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from fake_exchange import FakeExchange

pytestmark = [pytest.mark.unit, pytest.mark.websocket]  # the fake exchange runs in this process


@pytest.fixture
def live() -> Iterator[FakeExchange]:
    """A fake that generates a random walk at 20 events per second per stream."""
    with FakeExchange(rate=20, ping_interval=0.2, ping_timeout=5, seed=1) as exchange:
        yield exchange


def connect(fake: FakeExchange, path: str) -> websocket.WebSocket:
    ws = websocket.create_connection(fake.ws_url + path, timeout=3)
    return ws


def next_json(ws: websocket.WebSocket, match: str = "") -> Any:
    """The next text frame containing `match`, decoded."""
    while True:
        text = ws.recv()
        if match in text:
            return json.loads(text)


def test_combined_stream_wraps_events_with_stream_names(live: FakeExchange) -> None:
    ws = connect(live, "/stream?streams=btcusdt@trade/ethusdt@miniTicker/bnbusdt@bookTicker")
    seen = {next_json(ws)["stream"] for _ in range(9)}
    assert seen == {"btcusdt@trade", "ethusdt@miniTicker", "bnbusdt@bookTicker"}
    event = next_json(ws, "btcusdt@trade")["data"]
    assert event["e"] == "trade"
    assert event["s"] == "BTCUSDT"
    assert isinstance(event["p"], str)
    assert isinstance(event["t"], int)
    ws.close()


def test_raw_stream_sends_bare_payloads(live: FakeExchange) -> None:
    ws = connect(live, "/ws/btcusdt@kline_1m")
    event = next_json(ws)
    assert event["e"] == "kline"
    assert event["k"]["i"] == "1m"
    assert event["k"]["x"] is False
    ws.close()


def test_all_mini_tickers_array(live: FakeExchange) -> None:
    ws = connect(live, "/ws/!miniTicker@arr")
    array = next_json(ws)
    assert isinstance(array, list)
    assert {e["s"] for e in array} >= {"BTCUSDT", "ETHUSDT"}
    ws.close()


def test_subscribe_list_and_unsubscribe_replies(live: FakeExchange) -> None:
    ws = connect(live, "/ws")
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1}))
    assert next_json(ws, '"id"') == {"result": None, "id": 1}
    assert next_json(ws, "aggTrade")["e"] == "aggTrade"
    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
    assert next_json(ws, '"id"') == {"result": ["btcusdt@aggTrade"], "id": 2}
    ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 3}))
    assert next_json(ws, '"id"') == {"result": None, "id": 3}
    ws.close()


@pytest.mark.parametrize(
    ("request_text", "code"),
    [
        ("{not json", 3),
        ('{"params": [], "id": 4}', 2),
        ('{"method": "SUBSCRIBEX", "params": [], "id": 5}', 2),
        ('{"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 6}', 2),
        ('{"method": "SUBSCRIBE", "params": [], "id": -1}', 2),
    ],
)
def test_bad_requests_get_binance_error_replies(
    live: FakeExchange,
    request_text: str,
    code: int,
) -> None:
    ws = connect(live, "/ws")
    ws.send(request_text)
    reply = next_json(ws, '"error"')
    assert reply["error"]["code"] == code
    assert isinstance(reply["error"]["msg"], str)
    ws.close()


def test_more_than_5_incoming_messages_per_second_closes_with_1008(live: FakeExchange) -> None:
    ws = connect(live, "/ws")
    for i in range(6):
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == 1008
            return
    pytest.fail("no 1008 close")


def test_server_pings_and_expects_pongs(live: FakeExchange) -> None:
    ws = connect(live, "/ws")
    ws.settimeout(3)
    opcode, _ = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PING
    ws.close()


def test_rest_ticker_price_single_and_list(live: FakeExchange) -> None:
    one = requests.get(f"{live.rest_url}/api/v3/ticker/price", params={"symbol": "BTCUSDT"}, timeout=3)
    assert one.status_code == 200
    assert set(one.json()) == {"symbol", "price"}
    assert one.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    many = requests.get(
        f"{live.rest_url}/api/v3/ticker/price", params={"symbols": '["BTCUSDT","ETHUSDT"]'}, timeout=3
    )
    assert [row["symbol"] for row in many.json()] == ["BTCUSDT", "ETHUSDT"]


def test_rest_24hr_has_binance_field_names(live: FakeExchange) -> None:
    row = requests.get(f"{live.rest_url}/api/v3/ticker/24hr", params={"symbol": "ETHUSDT"}, timeout=3).json()
    assert {
        "lastPrice",
        "bidPrice",
        "askPrice",
        "openPrice",
        "highPrice",
        "lowPrice",
        "volume",
        "quoteVolume",
        "priceChangePercent",
        "closeTime",
    } <= set(row)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEUSDT"}, -1121),
        ({"symbols": "[BTC"}, -1100),
        ({"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'}, -1101),
        ({"symbol": "bad symbol!"}, -1100),
    ],
)
def test_rest_errors_use_binance_codes(live: FakeExchange, params: dict[str, str], code: int) -> None:
    answer = requests.get(f"{live.rest_url}/api/v3/ticker/price", params=params, timeout=3)
    assert answer.status_code == 400
    assert answer.json()["code"] == code


def test_rest_429_and_418_carry_retry_after(live: FakeExchange) -> None:
    live.rest_429(retry_after=7, count=1)
    limited = requests.get(f"{live.rest_url}/api/v3/ticker/price", timeout=3)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    live.rest_418(retry_after=120, count=1)
    banned = requests.get(f"{live.rest_url}/api/v3/ticker/price", timeout=3)
    assert banned.status_code == 418
    assert banned.json()["code"] == -1003
    assert requests.get(f"{live.rest_url}/api/v3/ticker/price", timeout=3).status_code == 200


@pytest.mark.parametrize(("status", "retry_after"), [(429, 3), (418, 120)])
def test_handshake_can_be_refused_with_429_or_418_and_retry_after(
    live: FakeExchange, status: int, retry_after: int
) -> None:
    live.refuse_connections(status, retry_after)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(live, "/stream?streams=btcusdt@trade")
    assert refused.value.status_code == status
    assert refused.value.resp_headers["retry-after"] == str(retry_after)
    assert json.loads(refused.value.resp_body)["code"] == -1003
    live.resume()
    connect(live, "/stream?streams=btcusdt@trade").close()
    assert len(live.connection_attempts) == 2


def test_close_on_connect_closes_before_the_first_message(live: FakeExchange) -> None:
    live.close_on_connect(1011)
    ws = connect(live, "/stream?streams=btcusdt@trade")
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1011
    live.resume()
    assert next_json(connect(live, "/stream?streams=btcusdt@trade"))["stream"] == "btcusdt@trade"


@pytest.mark.slow
def test_a_fault_hits_only_the_connection_it_targets(live: FakeExchange) -> None:
    older = connect(live, "/stream?streams=btcusdt@trade")
    time.sleep(0.05)
    newer = connect(live, "/stream?streams=btcusdt@trade")
    # fault() returns once the closing handshake is over: the client's side too (or after 1 s)
    strike = threading.Thread(target=live.fault, args=("close_1011",), kwargs={"only": 0})
    strike.start()
    opcode, data = older.recv_data()
    while opcode != websocket.ABNF.OPCODE_CLOSE:
        opcode, data = older.recv_data()
    older.shutdown()
    strike.join(5)
    assert int.from_bytes(data[:2], "big") == 1011
    assert next_json(newer)["stream"] == "btcusdt@trade"  # the other one goes on
    assert live.open_connections() == 1
    with pytest.raises(ValueError, match="unknown fault"):
        live.fault("meteor")
    newer.close()


@pytest.mark.slow
def test_two_connections_receive_byte_identical_frames(live: FakeExchange) -> None:
    first = connect(live, "/stream?streams=btcusdt@trade/ethusdt@ticker")
    second = connect(live, "/stream?streams=btcusdt@trade/ethusdt@ticker")
    seen = [read_for(first, 0.3), read_for(second, 0.3)]  # 40 frames a second on each
    common = set(seen[0]) & set(seen[1])
    assert len(common) >= 5
    assert [f for f in seen[0] if f in common] == [f for f in seen[1] if f in common]
    first.close()
    second.close()


def read_for(ws: websocket.WebSocket, seconds: float) -> list[str]:
    """Every text frame received in the next `seconds` (pings answered on the way)."""
    frames = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_TEXT:
            frames.append(data.decode())
    return frames


def test_server_shutdown_without_close_leaves_the_connection_to_the_client(live: FakeExchange) -> None:
    live.shutdown_grace = 0.1
    ws = connect(live, "/stream?streams=btcusdt@trade")
    live.server_shutdown(close=False)
    assert next_json(ws, "serverShutdown")["data"]["e"] == "serverShutdown"
    time.sleep(0.3)
    assert live.open_connections() == 1  # past the grace time, still open
    ws.close()
    deadline = time.monotonic() + 3
    while not live.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(c.code, c.by_client) for c in live.closed] == [(1000, True)]
