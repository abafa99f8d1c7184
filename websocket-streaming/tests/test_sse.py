"""/stream over a real HTTP server: every update, in order, filtered, with heartbeats."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
import requests
from flask import Flask
from websocket_streaming.fake_exchange import FakeExchange, trade_event

from shared.testing import wait_until

pytestmark = [pytest.mark.websocket, pytest.mark.api]


def sse_messages(response: requests.Response) -> Iterator[tuple[str, str]]:
    """(kind, text) per SSE message: ("comment", text) or (event name, data)."""
    event, data = "message", ""
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = line.removeprefix("data:").strip()
        elif line == "" and data:
            yield event, data
            event, data = "message", ""


def open_stream(base: str, query: str = "") -> tuple[requests.Response, Iterator[tuple[str, str]]]:
    """Subscribe and wait for the `: connected` comment, so no later update can be missed."""
    response = requests.get(f"{base}/stream{query}", stream=True, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    messages = sse_messages(response)
    assert next(messages) == ("comment", "connected")
    return response, messages


def collect_prices(messages: Iterator[tuple[str, str]], count: int) -> list[tuple[str, Decimal]]:
    """The next `count` price events as (symbol, price)."""
    prices = []
    for kind, data in messages:
        if kind == "price":
            body = json.loads(data, parse_float=Decimal)
            prices.append((body["symbol"], body["price"]))
            if len(prices) == count:
                break
    return prices


def test_stream_receives_every_update_in_order(
    fake: FakeExchange,
    app: Flask,
    serve: Callable[[Flask], str],
) -> None:
    response, messages = open_stream(serve(app))
    sent = [(("BTCUSDT", "ETHUSDT")[i % 2], Decimal(f"{100 + i}.5")) for i in range(300)]
    for i, (symbol, price) in enumerate(sent):
        fake.send(trade_event(symbol, str(price), i), stream=f"{symbol.lower()}@trade")
    assert collect_prices(messages, len(sent)) == sent
    response.close()


def test_stream_filter_sends_only_the_chosen_symbols(
    fake: FakeExchange,
    app: Flask,
    serve: Callable[[Flask], str],
) -> None:
    response, messages = open_stream(serve(app), "?symbols=ethusdt")
    for i in range(10):
        fake.send(trade_event("BTCUSDT", f"{i}.1", i), stream="btcusdt@trade")
        fake.send(trade_event("ETHUSDT", f"{i}.2", i), stream="ethusdt@trade")
    got = collect_prices(messages, 10)
    assert got == [("ETHUSDT", Decimal(f"{i}.2")) for i in range(10)]
    response.close()


def test_stream_sends_heartbeat_comments(
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    base = serve(make_app(SSE_HEARTBEAT_SECONDS=0.2))
    response, messages = open_stream(base)
    started = time.monotonic()
    assert next(messages) == ("comment", "heartbeat")
    assert next(messages) == ("comment", "heartbeat")
    assert 0.3 <= time.monotonic() - started < 2.0
    response.close()


def test_subscriber_cap_answers_503_and_frees_the_slot_on_close(
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    # A dead client is noticed at the next write: the heartbeat bounds how long that takes.
    base = serve(make_app(SSE_MAX_SUBSCRIBERS=2, SSE_HEARTBEAT_SECONDS=0.2))
    first, _ = open_stream(base)
    second, _ = open_stream(base)
    refused = requests.get(f"{base}/stream", timeout=5)
    assert refused.status_code == 503
    assert refused.json()["error"] == "unavailable"
    assert "Retry-After" in refused.headers
    first.close()

    def reopened() -> bool:
        answer = requests.get(f"{base}/stream", stream=True, timeout=5)
        answer.close()
        return answer.status_code == 200

    wait_until(reopened, 3.0, "the closed stream's slot")
    second.close()
