"""The Redis bridge on its own: clocks that disagree, handovers, and the role callback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from sardag_testing import wait_until
from websocket_streaming.book import PriceBook, PriceRecord
from websocket_streaming.encoding import price_answer
from websocket_streaming.parser import PriceUpdate
from websocket_streaming.redis_bridge import FOLLOWER, LEADER, SOLO, RedisBridge

pytestmark = [pytest.mark.websocket]


def trade(price: str, when: int) -> PriceUpdate:
    return PriceUpdate("BTCUSDT", "trade", when, price=Decimal(price))


def answer(book: PriceBook) -> dict[str, Any]:
    """What /price/BTCUSDT answers from `book` now (PRICE_STALE_SECONDS=5)."""
    record = book.get("BTCUSDT")
    assert record is not None
    return json.loads(price_answer(record, 5.0), parse_float=Decimal)


@pytest.fixture
def bridges(redis_url: str, prefix: str) -> Iterator[Callable[..., RedisBridge]]:
    """Factory: a started bridge on a book of BTCUSDT, sharing this test's prefix; all stopped after."""
    made: list[RedisBridge] = []

    def factory(on_role: Callable[[str], None] = lambda role: None, **options: Any) -> RedisBridge:
        options = {"lock_ttl": 1.5, "silence": 1.0, "min_solo": 0.5, **options}
        bridge = RedisBridge(redis_url, PriceBook(["BTCUSDT"]), on_role, prefix=prefix, **options)
        made.append(bridge)
        bridge.start()
        wait_until(lambda: bridge._subscribed, 3.0, "the subscription")
        return bridge

    yield factory
    for bridge in made:
        bridge.stop()


def skewed(seconds: float) -> Callable[[], float]:
    """A wall clock `seconds` ahead of this host's (behind when negative)."""
    return lambda: time.time() + seconds


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("skew", [30.0, -30.0], ids=["leader-ahead", "leader-behind"])
def test_ages_and_order_never_depend_on_the_leaders_clock(
    bridges: Callable[..., RedisBridge], skew: float
) -> None:
    leader = bridges(clock=skewed(skew))
    wait_until(lambda: leader.role == LEADER, 3.0, "a leader")
    follower = bridges(lead=False)
    leader.book.apply(trade("100", 1000), received_at=leader.clock() - 2.0)  # 2 s old when published
    wait_until(lambda: follower.book.get("BTCUSDT"), 3.0, "the published price")
    served = answer(follower.book)
    assert 1.9 <= served["age_seconds"] <= 3.0, served  # ahead: was 0 (clamped); behind: 32
    assert served["stale"] is False

    late = bridges(lead=False)  # a worker started later: its book comes from price:* at once
    loaded = answer(late.book)
    assert loaded["price"] == Decimal("100")
    assert 1.9 <= loaded["age_seconds"] <= 3.5, loaded

    leader.stop()  # a new leader whose clock errs the other way publishes a newer event
    successor = bridges(clock=skewed(-skew))
    wait_until(lambda: successor.role == LEADER, 3.0, "the new leader")
    successor.book.apply(trade("101", 2000), received_at=successor.clock())
    wait_until(lambda: answer(follower.book)["price"] == Decimal("101"), 3.0, "the new leader's price")
    assert answer(follower.book)["age_seconds"] < 1.0


@pytest.mark.unit
@pytest.mark.parametrize("leader_first", [False, True], ids=["own-feed-first", "leader-first"])
def test_a_solo_worker_hearing_a_leader_stores_each_update_once_never_going_back(leader_first: bool) -> None:
    """While solo, its own feed and the leader's messages bring the same updates, in either order."""
    leader, worker = PriceBook(["BTCUSDT"]), PriceBook(["BTCUSDT"])
    own = [trade(str(n), n) for n in (100, 101, 102, 103)]
    # The leader stamped each update 1.5 s after the worker did (a later receipt, or its clock).
    published = [leader.apply(u, received_at=11.5 + n) for n, u in enumerate(own)]
    for n, update in enumerate(own):
        heard = PriceRecord.from_dict(published[n].to_dict())  # type: ignore[union-attr]
        if leader_first:
            worker.put(heard)
            worker.apply(update, received_at=10.0 + n)
        else:
            worker.apply(update, received_at=10.0 + n)
            if n:  # the leader's copy of the previous update, heard late
                worker.put(PriceRecord.from_dict(published[n - 1].to_dict()))  # type: ignore[union-attr]
    sent = worker.since(0)[1]
    assert [str(r.price) for r in sent] == ["100", "101", "102", "103"]


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.slow
def test_the_subscriber_goes_on_while_the_role_callback_runs(
    bridges: Callable[..., RedisBridge], redis_url: str, prefix: str
) -> None:
    release = threading.Event()
    bridge = bridges(on_role=lambda role: release.wait(10.0))  # e.g. upstream connections starting
    try:
        wait_until(lambda: bridge.role == LEADER, 3.0, "the lock taken")
        other = PriceBook(["BTCUSDT"])
        client = redis.Redis.from_url(redis_url)
        for n in range(3):
            record = other.apply(trade(str(n), n))
            assert record is not None
            message = {"origin": "elsewhere", "epoch": other.epoch, "last": n, "records": [record.to_dict()]}
            client.publish(f"{prefix}price-updates", json.dumps(message))
            time.sleep(0.3)
        wait_until(lambda: bridge.book.seq == 3, 1.5, "every message received during the callback")
    finally:
        release.set()


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.slow
def test_solo_to_follower_through_redis_sends_each_update_once_in_order(
    bridges: Callable[..., RedisBridge], redis_url: str, prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}lock:websocket-streaming:upstream", "another-instance", px=60_000)
    worker = bridges(silence=0.5, min_solo=2.0)  # nothing heard: solo, ingesting on its own
    wait_until(lambda: worker.role == SOLO, 3.0, "solo")
    leader = PriceBook(["BTCUSDT"])

    def publish(update: PriceUpdate) -> None:
        record = leader.apply(update)
        assert record is not None
        message = {"origin": "elsewhere", "epoch": leader.epoch, "last": record.seq, "sent_at": time.time()}
        client.publish(f"{prefix}price-updates", json.dumps({**message, "records": [record.to_dict()]}))

    def newest() -> int | None:
        record = worker.book.get("BTCUSDT")
        return None if record is None else record.event_time

    for n in range(100, 110):  # the leader is heard again while the worker's own feed still runs
        update = trade(str(n), n)
        if n % 2:  # its own feed first, the leader's copy after
            worker.book.apply(update)
            publish(update)
        else:  # the leader's copy first
            publish(update)
            wait_until(lambda n=n: newest() == n, 2.0, "the leader's copy")
            worker.book.apply(update)
        time.sleep(0.05)
    deadline = time.monotonic() + 5.0
    while worker.role != FOLLOWER and time.monotonic() < deadline:  # the leader's heartbeats
        heartbeat = {
            "origin": "elsewhere",
            "epoch": leader.epoch,
            "last": 10,
            "sent_at": time.time(),
            "records": [],
        }
        client.publish(f"{prefix}price-updates", json.dumps(heartbeat))
        time.sleep(0.1)
    assert worker.role == FOLLOWER
    for n in (110, 111):
        publish(trade(str(n), n))
    wait_until(lambda: newest() == 111, 2.0, "the leader's updates")
    assert [str(r.price) for r in worker.book.since(0)[1]] == [str(n) for n in range(100, 112)]


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.slow
def test_candle_events_reach_a_follower_under_the_leaders_ids_and_its_heartbeats_leave_no_gap(
    bridges: Callable[..., RedisBridge], redis_url: str, prefix: str
) -> None:
    leader = bridges()
    wait_until(lambda: leader.role == LEADER, 3.0, "the leader")
    follower = bridges()
    wait_until(lambda: follower.role == FOLLOWER, 3.0, "the follower")
    made = [leader.book.apply(trade(str(n), n)) for n in (1, 2, 3)]
    prices = [r.event_id for r in made if r is not None]
    candle = leader.book.add_event("BTCUSDT", '{"symbol":"BTCUSDT","close":3}', "1m", 0)
    wait_until(lambda: follower.book.seq == 4, 3.0, "every event on the follower")
    time.sleep(3 * leader.heartbeat)  # heartbeats name the last price seq (3), not the candle's (1)
    cursor, snapshot = follower.book.resume(prices[0])
    assert snapshot == []  # no gap marked: resumed exactly
    _, after, _ = follower.book.since(cursor)
    assert [r.event_id for r in after] == [prices[1], prices[2], candle]
    stored = json.loads(redis.Redis.from_url(redis_url).get(f"{prefix}price:BTCUSDT") or b"{}")
    assert (stored["kind"], stored["id"]) == ("price", prices[2])  # a candle event is never stored there
