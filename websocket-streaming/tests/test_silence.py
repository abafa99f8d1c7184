"""Per-stream silence: one stream stops while the others on the feed deliver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_exchange import FakeExchange
from flask import Flask
from sardag_testing import wait_until
from websocket_streaming import create_app, get_service, start_ingest, stop_ingest
from websocket_streaming.silence import StreamWatch

from .conftest import app_config


@pytest.mark.unit
def test_a_stream_silent_while_others_deliver_is_reported_once_and_healed_at_most_once_per_period() -> None:
    watch = StreamWatch(["a@x", "b@x"], silence=10.0)
    watch.start(0.0)
    for t in range(0, 12):
        watch.seen["a@x"] = float(t)
        healed = watch.check(float(t))
        assert healed == (t == 11)
    assert watch.silent == ("b@x",)
    watch.seen["a@x"] = 15.0
    assert not watch.check(15.0)  # still silent, but healed less than 10 s ago
    assert watch.detected == 1  # the same silence, counted once
    watch.seen["a@x"] = 21.0
    assert watch.check(21.0)
    watch.seen["b@x"] = 22.0
    assert not watch.check(22.0)
    assert watch.silent == ()


@pytest.mark.unit
def test_a_whole_feed_gone_quiet_is_the_watchdogs_business_not_a_silent_stream() -> None:
    watch = StreamWatch(["a@x", "b@x"], silence=1.0)
    watch.start(0.0)
    watch.seen["a@x"] = 0.5
    assert not watch.check(30.0)
    assert watch.silent == ()


@pytest.fixture
def live_fake() -> Iterator[FakeExchange]:
    """A fake exchange that generates every subscribed stream 20 times a second."""
    with FakeExchange(rate=20, ping_interval=0.5, ping_timeout=5, shutdown_grace=0.5) as exchange:
        yield exchange


@pytest.mark.unit
@pytest.mark.slow
@pytest.mark.websocket
def test_a_silent_stream_is_named_in_health_and_healed_by_a_reconnect(live_fake: FakeExchange) -> None:
    app: Flask = create_app(
        app_config(
            live_fake,
            SYMBOLS=("BTCUSDT", "ETHUSDT"),
            WS_STREAMS=("aggTrade", "ticker"),
            WS_STREAM_SILENCE_SECONDS=1.0,
        )
    )
    start_ingest(app)
    try:
        service = get_service(app)
        client = app.test_client()
        wait_until(lambda: len(service.watch.seen) == 4, 10.0, "every stream delivering")
        live_fake.mute_stream("ethusdt@ticker")

        def upstream() -> dict:
            check: dict = client.get("/health").get_json()["checks"]["upstream"]
            return check

        wait_until(lambda: upstream()["detail"].get("silent_streams") == ["ethusdt@ticker"], 10.0, "named")
        assert upstream()["status"] == "degraded"
        wait_until(lambda: service.watch.heals >= 1 and service.stats.rotations >= 1, 10.0, "a reconnect")
        wait_until(lambda: "silent_streams" not in upstream()["detail"], 10.0, "the stream back")
        stats = client.get("/stats").get_json()
        assert stats["stream_silences"] == 1
        assert stats["silent_streams"] == []
        assert b"sardag_ws_stream_silences_total" in client.get("/metrics").data
    finally:
        stop_ingest(app)
