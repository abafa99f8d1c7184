"""Latency from the exchange: event time → received per stream type, received → served per
/price answer and SSE write, the stale-answer counter, and Binance's clock offset."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from fake_exchange import FakeExchange, trade_event
from flask import Flask
from sardag_testing import free_port, wait_until
from websocket_streaming import get_service
from websocket_streaming.binance.rest import BinanceClient
from websocket_streaming.book import PriceBook, PriceRecord
from websocket_streaming.latency import ClockCheck
from websocket_streaming.parser import PriceUpdate, dec
from websocket_streaming.sse import DEFAULT_EVENTS, StreamSettings, price_events
from websocket_streaming.stats import IngestStats

from shared.metrics import get_metrics

from .test_sse import open_stream

pytestmark = pytest.mark.websocket


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of `name{labels...}` in a /metrics answer (None when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def flushed_metrics(app: Flask) -> str:
    get_service(app).latency.flush()  # what the 1 s metrics tick does
    return app.test_client().get("/metrics").get_data(as_text=True)


@pytest.mark.unit
def test_a_trade_1_5_s_old_at_the_exchange_is_measured_per_stream_type(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    app = make_app(WS_STREAMS=("trade",))
    sent_ms = int(time.time() * 1000) - 1500
    fake.send(trade_event("BTCUSDT", "42000.5", 1, now_ms=sent_ms), stream="btcusdt@trade")
    stats = wait_until(
        lambda: (
            (s := app.test_client().get("/stats").get_json())["latency"]["exchange_to_received"].get("trade")
            and s
        ),
        5.0,
        "the trade's latency in /stats",
    )
    trade = stats["latency"]["exchange_to_received"]["trade"]
    assert trade["samples"] == 1
    assert 1.5 <= trade["p50"] == trade["p99"] < 3.0
    text = flushed_metrics(app)
    assert metric(text, "sardag_feed_exchange_delay_seconds_bucket", type="trade", le="1.0") == 0.0
    assert metric(text, "sardag_feed_exchange_delay_seconds_bucket", type="trade", le="2.5") == 1.0


@pytest.mark.unit
def test_price_answers_are_timed_from_receipt_and_counted_by_stale_flag(idle_app: Flask) -> None:
    service = get_service(idle_app)
    event_ms = int(time.time() * 1000) - 2000
    service.book.apply(PriceUpdate("BTCUSDT", "trade", event_ms, price=dec("1.5")), time.time() - 0.3)
    service.book.apply(PriceUpdate("ETHUSDT", "trade", event_ms, price=dec("2.5")), time.time() - 60)
    client = idle_app.test_client()
    assert client.get("/price/BTCUSDT").get_json()["stale"] is False
    assert client.get("/price/ETHUSDT").get_json()["stale"] is True
    assert client.get("/price/ETHUSDT").get_json()["stale"] is True
    text = flushed_metrics(idle_app)
    assert metric(text, "sardag_price_answers_total", stale="false") == 1.0
    assert metric(text, "sardag_price_answers_total", stale="true") == 2.0
    # received → served: 0.3 s (BTCUSDT) and 60 s twice (ETHUSDT); from the exchange: 2 s, 2 s, 2 s
    assert metric(text, "sardag_price_served_delay_seconds_bucket", path="price", le="0.5") == 1.0
    assert metric(text, "sardag_price_served_delay_seconds_bucket", path="price", le="30.0") == 1.0
    assert metric(text, "sardag_price_served_delay_seconds_count", path="price") == 3.0
    assert metric(text, "sardag_price_exchange_to_served_seconds_bucket", path="price", le="1.0") == 0.0
    assert metric(text, "sardag_price_exchange_to_served_seconds_bucket", path="price", le="2.5") == 3.0
    served = client.get("/stats").get_json()["latency"]["received_to_served"]["price"]
    assert served["samples"] == 3
    assert 60 <= served["p50"] <= served["p99"] < 61  # nearest rank: the 2nd and 3rd of 0.3, 60, 60


@pytest.mark.unit
def test_stale_counters_are_exported_at_zero_before_any_answer(idle_app: Flask) -> None:
    text = idle_app.test_client().get("/metrics").get_data(as_text=True)
    assert metric(text, "sardag_price_answers_total", stale="true") == 0.0
    assert metric(text, "sardag_price_answers_total", stale="false") == 0.0


@pytest.mark.unit
def test_each_live_sse_write_reports_the_records_it_carried_after_writing_them() -> None:
    book = PriceBook(("BTCUSDT", "ETHUSDT"), 64)
    written: list[list[PriceRecord]] = []
    settings = StreamSettings(stale_after=10.0, heartbeat=0.05, retry=1.0)
    events = price_events(
        book, None, frozenset({"BTCUSDT"}), DEFAULT_EVENTS, settings, IngestStats(), written.append
    )
    next(events)  # the opening chunk: `retry:` and the (empty) snapshot
    book.apply(PriceUpdate("ETHUSDT", "trade", 1, price=dec("2")))
    book.apply(PriceUpdate("BTCUSDT", "trade", 2, price=dec("1")))
    chunk = next(events)
    assert b"event: price" in chunk
    assert b"BTCUSDT" in chunk
    assert written == []  # not yet written: the server writes the chunk after the yield
    next(events)  # the server asks for more: the chunk is out
    assert [[r.symbol for r in records] for records in written] == [["BTCUSDT"]]
    book.close()


@pytest.mark.unit
def test_a_subscriber_of_stream_gets_its_sse_writes_timed_from_the_exchange(
    fake: FakeExchange, make_app: Callable[..., Flask], serve: Callable[[Flask], str]
) -> None:
    app = make_app(WS_STREAMS=("trade",), SSE_HEARTBEAT_SECONDS=0.1)
    response, messages = open_stream(serve(app), "?symbols=BTCUSDT")
    fake.send(trade_event("BTCUSDT", "7.5", 1, now_ms=int(time.time() * 1000) - 1000), stream="btcusdt@trade")
    assert next(kind for kind, _data in messages if kind == "price") == "price"
    assert next(messages) == ("comment", "heartbeat")  # the server came back for more: written
    response.close()
    text = flushed_metrics(app)
    assert metric(text, "sardag_price_served_delay_seconds_count", path="sse") == 1.0
    assert metric(text, "sardag_price_exchange_to_served_seconds_bucket", path="sse", le="0.5") == 0.0
    assert metric(text, "sardag_price_exchange_to_served_seconds_bucket", path="sse", le="2.5") == 1.0


@pytest.mark.unit
def test_the_fake_exchange_serves_its_time_with_weight_1(fake: FakeExchange) -> None:
    client = BinanceClient(fake.rest_url)
    before = int(time.time() * 1000)
    server_ms = client.server_time()
    assert before - 5 <= server_ms <= int(time.time() * 1000) + 5
    assert client.used_weight == 1


@pytest.mark.unit
def test_the_clock_offset_is_measured_exported_and_shown(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    app = make_app(BINANCE_TIME_CHECK_SECONDS=60)  # the first measurement is at start
    clock = get_service(app).clock

    def exported() -> re.Match[str] | None:  # the offset is kept, then exported: wait for both
        text = app.test_client().get("/metrics").get_data(as_text=True)
        return re.search(r"^sardag_exchange_clock_offset_seconds\{[^}]*\} (\S+)$", text, re.MULTILINE)

    found = wait_until(exported, 5.0, "a first clock measurement exported")
    assert clock.offset is not None
    assert clock.round_trip is not None
    assert abs(clock.offset) <= clock.round_trip / 2 + 0.002  # the fake shares our clock
    assert any(r.target.startswith("/api/v3/time") for r in fake.rest_log)
    assert float(found[1]) == clock.offset
    assert app.test_client().get("/stats").get_json()["latency"]["clock_offset_seconds"] == clock.offset


@pytest.mark.unit
def test_an_unreachable_exchange_leaves_the_offset_unknown(
    idle_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = BinanceClient(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    check = ClockCheck(client, get_metrics(idle_app), 60, lambda: True)
    assert check.measure() is None
    assert check.offset is None
    assert "could not read Binance's server time" in caplog.text


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.slow
def test_a_follower_times_its_answers_from_the_leaders_receipt_and_never_asks_binance_the_time(
    fake: FakeExchange, redis_app: Callable[..., Flask]
) -> None:
    apps = [redis_app(BINANCE_TIME_CHECK_SECONDS=60), redis_app(BINANCE_TIME_CHECK_SECONDS=60)]
    wait_until(lambda: sorted(get_service(a).role for a in apps) == ["follower", "leader"], 3.0, "roles")
    leader, follower = sorted(apps, key=lambda a: get_service(a).role != "leader")
    wait_until(lambda: fake.open_connections() >= 1, 3.0, "the leader's upstream connection")
    fake.send(trade_event("BTCUSDT", "101.5", 1, now_ms=int(time.time() * 1000) - 1000), stream="btcusdt@trade")
    answer = wait_until(
        lambda: (r := follower.test_client().get("/price/BTCUSDT")).status_code == 200 and r.get_json(),
        3.0,
        "the price on the follower",
    )
    # the follower restates the leader's receipt on its own clock (age at send + time since):
    # the same moment, give or take the conversion, never the follower's own receipt
    leader_received = int(get_service(leader).book.get("BTCUSDT").received_at * 1000)
    assert abs(answer["received_at"] - leader_received) < 500
    latency = follower.test_client().get("/stats").get_json()["latency"]
    assert latency["received_to_served"]["price"]["p50"] < 1.0  # from the leader's receipt
    assert latency["exchange_to_received"] == {}  # the follower read no frame itself
    text = flushed_metrics(follower)
    assert metric(text, "sardag_price_exchange_to_served_seconds_bucket", path="price", le="0.5") == 0.0
    assert metric(text, "sardag_price_exchange_to_served_seconds_bucket", path="price", le="2.5") == 1.0
    wait_until(lambda: get_service(leader).clock.offset is not None, 3.0, "the leader's clock check")
    assert get_service(follower).clock.offset is None
    assert sum(r.target.startswith("/api/v3/time") for r in fake.rest_log) == 1
