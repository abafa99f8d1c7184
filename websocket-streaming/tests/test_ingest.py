"""Ingest against the fake exchange, over real loopback WebSockets: shapes and failures."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fake_exchange import FakeExchange, trade_event
from flask import Flask
from flask.testing import FlaskClient
from sardag_testing import wait_until
from websocket_streaming import create_app, get_service, start_ingest, stop_ingest
from websocket_streaming.parser import PriceUpdate

from .conftest import app_config

pytestmark = [pytest.mark.unit, pytest.mark.websocket, pytest.mark.api]
FRAMES = (Path(__file__).parent / "frames" / "binance-frames.jsonl").read_text().splitlines()


def documented(line: int) -> dict[str, Any] | list[Any]:
    """Line `line` (1-based) of the documented frames, decoded."""
    return json.loads(FRAMES[line - 1])


def answer(client: FlaskClient, symbol: str) -> dict[str, Any] | None:
    """The /price answer (exact decimals), or None while it is not 200."""
    response = client.get(f"/price/{symbol}")
    return json.loads(response.data, parse_float=Decimal) if response.status_code == 200 else None


def wait_price(client: FlaskClient, symbol: str, **expected: Any) -> dict[str, Any]:
    """Wait until /price/<symbol> shows every `expected` field value."""

    def matches() -> dict[str, Any] | None:
        got = answer(client, symbol)
        ok = got is not None and all(got.get(k) == v for k, v in expected.items())
        return got if ok else None

    return wait_until(matches, 3.0, f"{symbol} with {expected}")


def wait_price_after(client: FlaskClient, since: float, timeout: float, what: str) -> dict[str, Any]:
    """Wait until /price/BTCUSDT shows a price received after `since` (epoch seconds)."""
    return wait_until(
        lambda: (a := answer(client, "BTCUSDT")) and a["received_at"] > since * 1000 and a, timeout, what
    )


D = Decimal


@pytest.mark.parametrize(
    ("line", "stream", "symbol", "expected"),
    [
        (1, "bnbbtc@trade", "BNBBTC", {"price": D("0.001"), "event_time": 1672515782136}),
        (2, "bnbbtc@aggTrade", "BNBBTC", {"price": D("0.001")}),
        (
            3,
            "bnbbtc@miniTicker",
            "BNBBTC",
            {
                "price": D("0.0025"),
                "open_24h": D("0.0010"),
                "high_24h": D("0.0025"),
                "low_24h": D("0.0010"),
                "volume_24h": D("10000"),
            },
        ),
        (
            4,
            "bnbbtc@ticker",
            "BNBBTC",
            {
                "price": D("0.0025"),
                "bid": D("0.0024"),
                "ask": D("0.0026"),
                "change_24h_percent": D("250.00"),
                "volume_24h": D("10000"),
            },
        ),
        (6, "bnbbtc@kline_1m", "BNBBTC", {"price": D("0.0020")}),
        (8, None, "BNBBTC", {"price": D("0.0025"), "source": "websocket"}),
        (13, "btcusdt@trade", "BTCUSDT", {"price": D("36877.31000000")}),
    ],
)
def test_each_documented_price_frame_updates_price(
    fake: FakeExchange,
    client: FlaskClient,
    line: int,
    stream: str | None,
    symbol: str,
    expected: dict[str, Any],
) -> None:
    fake.send(documented(line), stream=stream)
    got = wait_price(client, symbol, **expected)
    assert got["stale"] is False
    assert got["age_seconds"] < 1


@pytest.mark.parametrize(("line", "symbol"), [(5, "BNBUSDT"), (14, "BTCUSDT")])
def test_book_ticker_frames_update_bid_and_ask(
    fake: FakeExchange,
    client: FlaskClient,
    line: int,
    symbol: str,
) -> None:
    fake.send(trade_event(symbol, "25.36", 1), stream=f"{symbol.lower()}@trade")
    wait_price(client, symbol, price=D("25.36"))
    frame = documented(line)
    assert isinstance(frame, dict)
    fake.send(frame, stream=f"{symbol.lower()}@bookTicker")
    wait_price(client, symbol, price=D("25.36"), bid=D(frame["b"]), ask=D(frame["a"]))


def test_price_json_number_keeps_the_exchange_digits(fake: FakeExchange, client: FlaskClient) -> None:
    fake.send(documented(13), stream="btcusdt@trade")
    wait_price(client, "BTCUSDT", price=D("36877.31000000"))
    assert b'"price":36877.31000000,' in client.get("/price/btcusdt").data


def test_2023_trade_frame_with_extra_fields_parses_and_counts_them(
    fake: FakeExchange,
    client: FlaskClient,
) -> None:
    fake.send(documented(13), stream="btcusdt@trade")
    wait_price(client, "BTCUSDT", price=D("36877.31000000"), event_time=1699534780335)
    stats = client.get("/stats").get_json()
    assert stats["unknown_fields"] == 1
    assert stats["parse_errors"] == 0


def test_mini_ticker_array_updates_several_symbols(fake: FakeExchange, client: FlaskClient) -> None:
    element = documented(7)[0]  # type: ignore[index]
    batch = [
        {**element, "s": "BTCUSDT", "c": "91000.10"},
        {**element, "s": "ETHUSDT", "c": "3001.20"},
        {**element, "s": "DOGEUSDT", "c": "0.1"},
    ]  # untracked: ignored
    fake.send(batch, stream="!miniTicker@arr")
    wait_price(client, "BTCUSDT", price=D("91000.10"))
    wait_price(client, "ETHUSDT", price=D("3001.20"))
    assert client.get("/stats").get_json()["messages_by_type"] == {"miniTickerArr": 1}


def test_drop_then_prices_flow_again_within_2_seconds(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(WS_BACKOFF_BASE_SECONDS=0.5)  # the production default
    client = app.test_client()
    fake.set_rate(20)
    wait_price(client, "BTCUSDT")
    fake.drop()
    dropped_at = time.time()
    wait_until(
        lambda: (
            (a := answer(client, "BTCUSDT"))
            and a["received_at"] > dropped_at * 1000
            and get_service(app).stats.reconnects == 1
        ),
        2.0,
        "prices after the drop",
    )
    health = client.get("/health").get_json()["checks"]["upstream"]["detail"]
    assert health["connected"] is True
    assert health["reconnects"] == 1


@pytest.mark.slow
def test_silent_connection_is_replaced_by_the_watchdog(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(PRICE_STALE_SECONDS=0.5)  # ten frames' time at 20 a second
    client = app.test_client()
    fake.set_rate(20)
    wait_price(client, "BTCUSDT")
    fake.go_silent()
    stats = get_service(app).stats
    time.sleep(0.05)  # a frame already on its way still arrives
    last_message_at = stats.last_message_at  # the silence starts here, not when the test asked for it
    assert last_message_at is not None
    wait_until(lambda: stats.watchdog_reconnects == 1, 3.0, "the watchdog")
    assert time.time() - last_message_at >= 0.45  # not before PRICE_STALE_SECONDS of silence
    wait_until(
        lambda: (a := answer(client, "BTCUSDT")) and a["age_seconds"] < 0.2,
        2.0,
        "fresh prices on the new connection",
    )
    assert wait_until(lambda: fake.open_connections() == 1, what="old socket closed")


def test_garbage_and_unknown_events_are_counted_and_nothing_breaks(
    fake: FakeExchange,
    client: FlaskClient,
) -> None:
    for _ in range(3):
        fake.send_garbage()
    fake.send("[1, 2, 3]")
    for _ in range(2):
        fake.send_unknown_event()
    fake.send(trade_event("ETHUSDT", "3100.5", 7), stream="ethusdt@trade")
    wait_price(client, "ETHUSDT", price=D("3100.5"))
    stats = client.get("/stats").get_json()
    assert stats["parse_errors"] == 4
    assert stats["messages_by_type"] == {"unknown": 2, "trade": 1}
    assert stats["connection_attempts"] == 1  # bad frames do not cost the connection
    assert client.get("/health").status_code == 200


def test_a_failing_handler_is_counted_and_the_reader_goes_on(
    fake: FakeExchange,
    client: FlaskClient,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    book = get_service(app).book
    real_apply = book.apply
    calls: list[int] = []

    def faulty(update: PriceUpdate, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real_apply(update, *args, **kwargs)

    monkeypatch.setattr(book, "apply", faulty)
    fake.send(trade_event("ETHUSDT", "1.5", 1), stream="ethusdt@trade")
    fake.send(trade_event("ETHUSDT", "2.5", 2), stream="ethusdt@trade")
    wait_price(client, "ETHUSDT", price=D("2.5"))
    stats = client.get("/stats").get_json()
    assert stats["handler_errors"] == 1
    assert stats["connection_attempts"] == 1


@pytest.mark.slow
def test_close_1008_backs_off_without_a_reconnect_storm(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    # Full jitter scales with time: a third of the 3 s watch (0.2 s base, 2 s cap) bounds as well.
    app = make_app(WS_BACKOFF_BASE_SECONDS=0.07, WS_BACKOFF_CAP_SECONDS=0.7)
    fake.set_rate(20)
    client = app.test_client()
    wait_price(client, "BTCUSDT")
    before = len(fake.connection_attempts)
    fake.close_1008(persistent=True)
    time.sleep(1.0)
    attempts = len(fake.connection_attempts) - before
    assert 2 <= attempts <= 12  # without backoff this is hundreds in 1 s
    fake.resume()
    wait_price_after(client, time.time(), 4.0, "prices after the exchange stops closing with 1008")


@pytest.mark.slow
def test_refused_connections_are_retried_with_backoff(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    fake.refuse_connections()
    app = make_app(connect=False, WS_BACKOFF_BASE_SECONDS=0.1, WS_BACKOFF_CAP_SECONDS=1.0)
    time.sleep(1.0)  # half the timings of a 2 s watch with 0.2 s base and 2 s cap: the same bounds
    assert 2 <= len(fake.connection_attempts) <= 10
    assert get_service(app).stats.connected is False
    fake.resume()
    wait_until(lambda: fake.open_connections() == 1, 4.0, "a connection once accepted again")


def numbered_trades(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the trade id of every trade the book applies (the fake numbers its events)."""
    book = get_service(app).book
    real_apply = book.apply
    ids: list[int] = []

    def spy(update: PriceUpdate, *args: Any, **kwargs: Any) -> Any:
        if update.kind == "trade" and update.update_id is not None:
            ids.append(update.update_id)
        return real_apply(update, *args, **kwargs)

    monkeypatch.setattr(book, "apply", spy)
    return ids


def assert_no_gap(ids: list[int]) -> None:
    """Every number between the first and the last seen exactly once."""
    assert len(ids) > 50
    assert sorted(ids) == list(range(min(ids), max(ids) + 1)), "an event was lost or repeated"


def test_server_shutdown_switches_connections_without_losing_a_message(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(SYMBOLS=("BTCUSDT", "ETHUSDT"), WS_STREAMS=("trade",))
    ids = numbered_trades(app, monkeypatch)
    fake.set_rate(100)
    wait_until(lambda: len(ids) > 20, what="trades")
    fake.server_shutdown()
    stats = get_service(app).stats
    wait_until(lambda: stats.rotations == 1, 3.0, "the make-before-break switch")
    switched_at = len(ids)
    wait_until(lambda: fake.open_connections() == 1, 3.0, "the old connection closed")
    wait_until(lambda: len(ids) > switched_at + 50, what="trades on the new connection")
    fake.set_rate(0)
    assert stats.reconnects == 0  # a switch, not a loss
    assert_no_gap(ids)


@pytest.mark.slow
def test_max_connection_age_rotates_without_losing_a_message(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(
        SYMBOLS=("BTCUSDT", "ETHUSDT"),
        WS_STREAMS=("trade",),
        WS_MAX_CONNECTION_AGE_SECONDS=0.3,
        WS_ROTATION_OVERLAP_SECONDS=0.15,  # half the age: one old connection drains at a time
    )
    ids = numbered_trades(app, monkeypatch)
    fake.set_rate(100)
    stats = get_service(app).stats
    wait_until(lambda: stats.rotations >= 3, 5.0, "three rotations")
    fake.set_rate(0)
    time.sleep(0.2)
    assert stats.reconnects == 0
    assert_no_gap(ids)


@pytest.mark.slow
@pytest.mark.parametrize("status", [429, 418])
def test_rest_backfill_waits_for_retry_after(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    status: int,
) -> None:
    if status == 429:
        fake.rest_429(retry_after=1, count=1)
    else:
        fake.rest_418(retry_after=1, count=1)
    app = make_app(WS_BACKFILL_ENABLED=True)
    client = app.test_client()
    assert client.get("/price/BTCUSDT").status_code == 503
    got = wait_price(client, "BTCUSDT", source="rest")
    assert got["price"] > 0
    assert got["bid"] < got["ask"]
    first, second = fake.rest_log[:2]
    assert (first.status, second.status) == (status, 200)
    assert second.at - first.at >= 1.0  # Retry-After honoured: no request before it passed
    assert len(fake.rest_log) == 2


def test_rest_backfill_runs_after_a_gap(fake: FakeExchange, make_app: Callable[..., Flask]) -> None:
    make_app(WS_BACKFILL_ENABLED=True)
    wait_until(lambda: len(fake.rest_log) == 1, what="the start-up backfill")
    fake.drop()
    wait_until(lambda: len(fake.rest_log) == 2, 3.0, "a backfill after the drop")
    assert "/api/v3/ticker/24hr" in fake.rest_log[1].target


@pytest.mark.slow
def test_ingest_metrics_are_exported(fake: FakeExchange, client: FlaskClient) -> None:
    fake.send_garbage()
    fake.send(trade_event("ETHUSDT", "3100.5", 7), stream="ethusdt@trade")
    wait_price(client, "ETHUSDT", price=D("3100.5"))

    def exported() -> str | None:
        text = client.get("/metrics").get_data(as_text=True)
        return (
            text
            if 'sardag_price_updated_timestamp_seconds{service="websocket-streaming",symbol="ETHUSDT"}' in text
            else None
        )

    text = wait_until(exported, 3.0, "the metrics tick")
    assert 'sardag_ws_messages_total{service="websocket-streaming",type="trade"} 1.0' in text
    assert 'sardag_ws_parse_errors_total{service="websocket-streaming"} 1.0' in text
    assert 'sardag_ws_connected{service="websocket-streaming"} 1.0' in text
    assert "sardag_ws_reconnects_total" in text


@pytest.mark.slow
def test_connection_attempts_never_exceed_the_budget(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    fake.refuse_connections()
    app = make_app(
        connect=False,
        WS_CONNECT_ATTEMPTS_PER_5_MIN=3,
        WS_BACKOFF_BASE_SECONDS=0.01,
        WS_BACKOFF_CAP_SECONDS=0.02,
    )
    time.sleep(0.5)  # without the budget this would be dozens of attempts
    assert len(fake.connection_attempts) == 3
    assert get_service(app).stats.connection_attempts == 3


@pytest.mark.slow
def test_backfill_does_not_retry_a_request_binance_rejects(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(WS_BACKFILL_ENABLED=True, SYMBOLS=("BTCUSDT", "NOPEUSDT"))
    wait_until(lambda: fake.rest_log, what="the backfill request")
    time.sleep(1.5)
    assert [entry.status for entry in fake.rest_log] == [400]  # -1121 Invalid symbol: once
    assert get_service(app).stats.backfill_errors == 1
    fake.send(trade_event("BTCUSDT", "95000.5", 1), stream="btcusdt@trade")
    wait_price(app.test_client(), "BTCUSDT", price=D("95000.5"))


@pytest.mark.slow
def test_old_connection_closing_before_the_new_one_delivers_still_switches(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    fake.shutdown_grace = 0.3  # the exchange cuts the old socket before the new one sends
    app = make_app(PRICE_STALE_SECONDS=0.5)
    fake.server_shutdown()
    wait_until(lambda: len(fake.connection_attempts) == 2, 2.0, "the new connection")
    wait_until(lambda: fake.open_connections() == 1, 2.0, "the old connection cut")
    fake.set_rate(20)
    client = app.test_client()
    wait_price(client, "BTCUSDT")
    fake.go_silent()
    stats = get_service(app).stats
    wait_until(lambda: stats.watchdog_reconnects == 1, 3.0, "the watchdog on the new connection")
    wait_until(
        lambda: (a := answer(client, "BTCUSDT")) and a["age_seconds"] < 0.2,
        3.0,
        "prices on the connection after it",
    )


@pytest.mark.slow
def test_server_pings_are_answered_so_the_connection_stays() -> None:
    # A stricter exchange than the fixture's: ping every 0.1 s, drop after 0.3 s unanswered.
    with FakeExchange(rate=5, ping_interval=0.1, ping_timeout=0.3) as strict:
        app = create_app(app_config(strict, PRICE_STALE_SECONDS=5.0))
        start_ingest(app)
        try:
            wait_until(lambda: strict.open_connections() == 1, what="the connection")
            time.sleep(1.0)  # ten pings, each unanswered one fatal within 0.3 s
            assert len(strict.connection_attempts) == 1
            assert strict.open_connections() == 1
        finally:
            stop_ingest(app)


def retry_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delays the upstream logged after each lost connection ("...; retry in 0.12 s")."""
    found = (re.search(r"lost \(.*\); retry in ([\d.]+) s", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


@pytest.mark.slow
def test_a_connection_that_delivered_is_replaced_at_once_however_often_it_drops(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "websocket_streaming.upstream")
    # A backoff this steep would wait up to 1, 2, 4, 8... s if drops counted as failures.
    app = make_app(WS_BACKOFF_BASE_SECONDS=1.0, WS_BACKOFF_CAP_SECONDS=30.0)
    client = app.test_client()
    fake.set_rate(20)
    since = 0.0
    for n in range(8):
        wait_until(
            lambda n=n, since=since: (
                get_service(app).stats.reconnects == n
                and (a := answer(client, "BTCUSDT"))
                and a["received_at"] > since * 1000
            ),
            3.0,
            f"prices on connection {n + 1}",
        )
        fake.drop()
        since = time.time()
    wait_until(lambda: len(retry_delays(caplog)) == 8, 3.0, "eight reconnects")
    assert max(retry_delays(caplog)) <= 0.25
    line = client.get("/health").get_json()["checks"]["upstream"]["detail"]["lines"][0]
    assert line["consecutive_failures"] == 0


@pytest.mark.slow
def test_connections_closed_before_their_first_message_back_off(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(WS_BACKOFF_BASE_SECONDS=0.07, WS_BACKOFF_CAP_SECONDS=0.7)  # a third of 0.2 and 2 s
    client = app.test_client()
    fake.set_rate(20)
    wait_price(client, "BTCUSDT")
    fake.close_on_connect(1000)  # accepted, then closed before any data: a failed attempt
    before = len(fake.connection_attempts)
    fake.drop()
    time.sleep(1.0)  # a third of 3 s: the same bounds
    attempts = len(fake.connection_attempts) - before
    assert 2 <= attempts <= 12  # at once every time, this would be dozens
    detail = client.get("/health").get_json()["checks"]["upstream"]["detail"]
    assert detail["lines"][0]["consecutive_failures"] >= 2
    assert "close 1000" in detail["last_error"]
    fake.resume()
    wait_price_after(client, time.time(), 4.0, "prices once connections are kept again")


@pytest.mark.slow
@pytest.mark.parametrize("status", [429, 418])
def test_http_429_or_418_at_the_handshake_waits_for_retry_after(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    status: int,
) -> None:
    fake.refuse_connections(status, retry_after=1)
    app = make_app(connect=False, WS_BACKOFF_BASE_SECONDS=0.01, WS_BACKOFF_CAP_SECONDS=0.02)

    def upstream() -> dict[str, Any]:
        detail: dict[str, Any] = app.test_client().get("/health").get_json()["checks"]["upstream"]["detail"]
        return detail

    # two refusals seen by the service; the third attempt, a Retry-After later, is accepted
    wait_until(lambda: upstream()["lines"][0]["consecutive_failures"] >= 2, 5.0, "two refused attempts")
    assert upstream()["last_error"] == f"HTTP {status} at handshake (Retry-After 1 s)"
    fake.resume()
    wait_until(lambda: fake.open_connections() == 1, 3.0, "a connection once accepted again")
    gaps = [b - a for a, b in zip(fake.connection_attempts, fake.connection_attempts[1:], strict=False)]
    assert len(gaps) >= 2
    assert min(gaps[:2]) >= 0.95  # the backoff alone would retry within 20 ms
