"""The Binance REST client against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sardag_testing import free_port
from websocket_streaming.binance.rest import (
    BinanceClient,
    BinanceHTTPError,
    BinanceRateLimited,
    BinanceUnavailable,
)

pytestmark = pytest.mark.unit


class Script:
    """What the tiny exchange answers next, and what it was asked."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body: Any = None
        self.raw: bytes | None = None
        self.requests: list[str] = []


def make_handler(script: Script) -> type[BaseHTTPRequestHandler]:
    """A handler class answering from `script`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.requests.append(self.path)
            payload = script.raw if script.raw is not None else json.dumps(script.body or self._echo()).encode()
            self.send_response(script.status)
            for name, value in {"Content-Type": "application/json", **script.headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _echo(self) -> Any:
            query = parse_qs(urlsplit(self.path).query)
            if "symbols" in query:
                return [{"symbol": s, "price": "1.50000000"} for s in json.loads(query["symbols"][0])]
            return {"symbol": query.get("symbol", ["?"])[0], "price": "36877.31000000"}

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def exchange() -> Iterator[tuple[Script, str]]:
    """A loopback HTTP server scripted by the test."""
    script = Script()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    # shutdown() waits until the loop looks again: every 0.5 s by default, per test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_ticker_price_keeps_the_exact_string(exchange: tuple[Script, str]) -> None:
    script, url = exchange
    assert BinanceClient(url).ticker_price("btcusdt") == {"symbol": "BTCUSDT", "price": "36877.31000000"}
    assert script.requests == ["/api/v3/ticker/price?symbol=BTCUSDT"]


def test_several_symbols_in_one_request(exchange: tuple[Script, str]) -> None:
    script, url = exchange
    prices = BinanceClient(url).ticker_prices(["btcusdt", "ETHUSDT"])
    assert [p["symbol"] for p in prices] == ["BTCUSDT", "ETHUSDT"]
    assert len(script.requests) == 1


def test_24hr_and_klines_paths(exchange: tuple[Script, str]) -> None:
    script, url = exchange
    client = BinanceClient(url)
    script.body = {"lastPrice": "1"}
    client.ticker_24hr("BTCUSDT")
    client.tickers_24hr(["BTCUSDT"])
    script.body = [[0, "1", "2", "0.5", "1.5", "10", 59999, "15", 3, "5", "7", "0"]]
    assert client.klines("BTCUSDT", "1m", 1)[0][4] == "1.5"
    assert [r.split("?")[0] for r in script.requests] == [
        "/api/v3/ticker/24hr",
        "/api/v3/ticker/24hr",
        "/api/v3/klines",
    ]


@pytest.mark.parametrize(("status", "banned"), [(429, False), (418, True)])
def test_retry_after_is_honoured(exchange: tuple[Script, str], status: int, banned: bool) -> None:
    script, url = exchange
    now = [0.0]
    client = BinanceClient(url, clock=lambda: now[0])
    script.status, script.headers = status, {"Retry-After": "7"}
    with pytest.raises(BinanceRateLimited) as first:
        client.ticker_price("BTCUSDT")
    assert (first.value.retry_after, first.value.banned) == (7.0, banned)
    script.status, script.headers = 200, {}
    now[0] = 6.0
    with pytest.raises(BinanceRateLimited):  # still blocked: nothing is sent
        client.ticker_price("BTCUSDT")
    assert len(script.requests) == 1
    now[0] = 7.0
    assert client.ticker_price("BTCUSDT")["price"] == "36877.31000000"
    assert len(script.requests) == 2


def test_missing_retry_after_uses_a_safe_default(exchange: tuple[Script, str]) -> None:
    script, url = exchange
    script.status = 429
    with pytest.raises(BinanceRateLimited) as error:
        BinanceClient(url).ticker_price("BTCUSDT")
    assert error.value.retry_after == 60.0


def test_binance_error_body_becomes_a_typed_error(exchange: tuple[Script, str]) -> None:
    script, url = exchange
    script.status, script.body = 400, {"code": -1121, "msg": "Invalid symbol."}
    with pytest.raises(BinanceHTTPError) as error:
        BinanceClient(url).ticker_price("NOPE")
    assert (error.value.status, error.value.code, error.value.msg) == (400, -1121, "Invalid symbol.")


def test_server_errors_and_garbage_are_unavailable(exchange: tuple[Script, str]) -> None:
    script, url = exchange
    script.status = 502
    with pytest.raises(BinanceUnavailable):
        BinanceClient(url).ticker_price("BTCUSDT")
    script.status, script.raw = 200, b"<html>"
    with pytest.raises(BinanceUnavailable):
        BinanceClient(url).ticker_price("BTCUSDT")


def test_connection_refused_is_unavailable() -> None:
    with pytest.raises(BinanceUnavailable):
        BinanceClient(f"http://127.0.0.1:{free_port()}", timeout=1).ticker_price("BTCUSDT")


def test_used_weight_is_read(exchange: tuple[Script, str]) -> None:
    script, url = exchange
    script.headers = {"X-MBX-USED-WEIGHT-1M": "42"}
    client = BinanceClient(url)
    client.ticker_price("BTCUSDT")
    assert client.used_weight == 42
