"""SSE `candle` events in Redis mode: one id per event on every worker and instance, so a
client resumes with `Last-Event-ID` wherever it reconnects, in the leader's order."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fake_exchange import FakeExchange
from fake_exchange.drill import TradeFlow
from flask import Flask
from sardag_testing import wait_until
from websocket_streaming import get_service

from .test_sse import EventStream, open_stream, subscribed

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.websocket, pytest.mark.slow]
CANDLES = {"WS_STREAMS": ("aggTrade",), "CANDLE_INTERVALS": ("1s", "1m"), "CANDLE_EVENT_SECONDS": 0.05}


def events(stream: EventStream, count: int) -> list[tuple[str, str | None, str]]:
    """The next `count` events as (type, id, data), then on to the next candle event (so the
    last one read, the client's `Last-Event-ID`, is a candle's)."""
    got: list[tuple[str, str | None, str]] = []
    for kind, data in stream:
        if kind == "comment":
            continue
        got.append((kind, stream.ids[-1], data))
        if len(got) >= count and kind == "candle":
            break
    return got


@pytest.mark.parametrize("leader_first", [True, False], ids=["leader-to-follower", "follower-to-leader"])
def test_a_candle_id_from_one_worker_resumes_exactly_on_another_sharing_redis(
    fake: FakeExchange,
    redis_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
    leader_first: bool,
) -> None:
    # Two apps sharing one Redis stand for two workers (or instances) behind one address.
    apps = [redis_app(**CANDLES), redis_app(**CANDLES)]
    wait_until(lambda: fake.open_connections() == 1, 3.0, "one upstream connection")
    wait_until(lambda: all(subscribed(app) for app in apps), 3.0, "both apps subscribed")
    apps.sort(key=lambda app: get_service(app).role != "leader", reverse=not leader_first)
    here, there = (serve(app) for app in apps)
    _, witness = open_stream(there, "?events=price,candle")  # every event there, in its order
    _, first = open_stream(here, "?events=price,candle")
    flow = TradeFlow(fake, ("BTCUSDT", "ETHUSDT"), rate=40).start()
    try:
        before = events(first, 60)
        first.close()
        time.sleep(1.5)  # events (1 s candles closing among them) the client misses while away
        assert first.last_id is not None
        assert first.last_id.rpartition("-")[0].endswith("c")  # the id it resumes from is a candle's
        _, second = open_stream(there, "?events=price,candle", last_event_id=first.last_id)
        after = events(second, 120)
        second.close()
    finally:
        flow.stop()
    seen = []
    for kind, data in witness:  # up to the last event the client read
        if kind != "comment":
            seen.append((kind, witness.ids[-1], data))
            if witness.ids[-1] == after[-1][1]:
                break
    witness.close()
    ids = [event_id for _, event_id, _ in seen]
    start = ids.index(before[0][1])
    # exactly the events the other worker holds, in its order: none missed, none repeated
    assert [e[:2] for e in before + after] == [e[:2] for e in seen[start : start + len(before) + len(after)]]
    candles = [(i, data) for kind, i, data in before + after if kind == "candle"]
    assert [(i, data) for kind, i, data in seen if kind == "candle" and (i, data) in candles] == candles
    assert sum(1 for kind, _, _ in after if kind == "candle") >= 10  # the missed 1 s candles among them
