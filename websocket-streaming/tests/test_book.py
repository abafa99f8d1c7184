"""The price book: merging, ordering, the update ring, and the exact JSON answer."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import pytest
from websocket_streaming.backoff import AttemptWindow, Backoff
from websocket_streaming.book import PriceBook, PriceRecord
from websocket_streaming.encoding import price_answer
from websocket_streaming.parser import PriceUpdate

pytestmark = pytest.mark.unit


def trade(symbol: str, price: str, when: int | None) -> PriceUpdate:
    return PriceUpdate(symbol, "trade", when, price=Decimal(price))


def test_updates_merge_fields_from_different_streams() -> None:
    book = PriceBook(["BTCUSDT"])
    book.apply(trade("BTCUSDT", "100.5", 1000))
    book.apply(PriceUpdate("BTCUSDT", "bookTicker", None, bid=Decimal("100.4"), ask=Decimal("100.6")))
    record = book.get("BTCUSDT")
    assert record is not None
    assert (record.price, record.bid, record.ask) == (Decimal("100.5"), Decimal("100.4"), Decimal("100.6"))
    assert record.event_time == 1000


def test_an_older_event_never_overwrites_a_newer_price() -> None:
    book = PriceBook(["BTCUSDT"])
    book.apply(trade("BTCUSDT", "101", 2000))
    book.apply(trade("BTCUSDT", "99", 1000))
    assert book.get("BTCUSDT").price == Decimal("101")  # type: ignore[union-attr]


def test_untracked_symbols_are_ignored() -> None:
    book = PriceBook(["BTCUSDT"])
    assert book.apply(trade("DOGEUSDT", "1", 1)) is None
    assert book.snapshot() == {}


def test_ring_returns_updates_in_order_and_reports_loss() -> None:
    book = PriceBook(["BTCUSDT"], ring_size=16)
    for i in range(10):
        book.apply(trade("BTCUSDT", str(i), i))
    cursor, records, lost = book.since(0)
    assert (cursor, lost) == (10, False)
    assert [str(r.price) for r in records] == [str(i) for i in range(10)]
    for i in range(10, 40):
        book.apply(trade("BTCUSDT", str(i), i))
    cursor, records, lost = book.since(10)
    assert lost
    assert cursor == 40
    assert len(records) == 16


def test_wait_since_wakes_on_update_and_on_close() -> None:
    book = PriceBook(["BTCUSDT"])
    threading.Timer(0.05, lambda: book.apply(trade("BTCUSDT", "1", 1))).start()
    cursor, records, _ = book.wait_since(0, timeout=2)
    assert cursor == 1
    assert [str(r.price) for r in records] == ["1"]
    threading.Timer(0.05, book.close).start()
    started = time.monotonic()
    assert book.wait_since(cursor, timeout=2) == (1, [], False)
    assert time.monotonic() - started < 1


def test_wait_since_times_out_empty() -> None:
    book = PriceBook(["BTCUSDT"])
    started = time.monotonic()
    assert book.wait_since(0, timeout=0.1) == (0, [], False)
    assert time.monotonic() - started >= 0.1


def test_backfill_does_not_overwrite_a_websocket_update_newer_than_the_request() -> None:
    book = PriceBook(["BTCUSDT"])
    book.apply(trade("BTCUSDT", "105", 5000), received_at=200.0)
    assert not book.backfill(trade("BTCUSDT", "100", 6000), asked_at=150.0, received_at=210.0)
    assert book.backfill(trade("BTCUSDT", "100", 6000), asked_at=250.0, received_at=260.0)
    assert book.get("BTCUSDT").source == "rest"  # type: ignore[union-attr]


def test_record_round_trips_through_redis_json() -> None:
    book = PriceBook(["BTCUSDT"])
    record = book.apply(trade("BTCUSDT", "36877.31000000", 1699534780335))
    assert record is not None
    again = PriceRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert price_answer(again, 10, now=record.received_at) == price_answer(record, 10, now=record.received_at)


def test_price_answer_writes_the_exact_decimal_string_as_a_json_number() -> None:
    book = PriceBook(["BTCUSDT"])
    record = book.apply(trade("BTCUSDT", "36877.31000000", 1699534780335), received_at=1000.0)
    assert record is not None
    text = price_answer(record, stale_after=10, now=1003.0)
    assert '"price":36877.31000000,' in text
    answer = json.loads(text, parse_float=Decimal)
    assert answer["price"] == Decimal("36877.31000000")
    assert answer["received_at"] == 1_000_000
    assert answer["event_time"] == 1699534780335
    assert answer["age_seconds"] == Decimal("3.000")
    assert answer["stale"] is False
    assert json.loads(price_answer(record, stale_after=10, now=1011.0))["stale"] is True
    assert set(answer) == {
        "symbol",
        "price",
        "bid",
        "ask",
        "open_24h",
        "high_24h",
        "low_24h",
        "volume_24h",
        "change_24h_percent",
        "event_time",
        "received_at",
        "age_seconds",
        "stale",
        "source",
    }


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    ceilings: list[float] = []
    backoff = Backoff(base=0.5, cap=4.0, rng=lambda low, high: ceilings.append(high) or high)
    delays = [backoff.next_delay() for _ in range(6)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert delays[0] <= 1.0  # the first retry comes within a second
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_delays_are_random_between_zero_and_the_ceiling() -> None:
    backoff = Backoff(base=1.0, cap=1.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 150


def test_attempt_window_allows_300_per_5_minutes_sliding() -> None:
    now = [0.0]
    window = AttemptWindow(limit=300, window=300.0, clock=lambda: now[0])
    for _ in range(300):
        assert window.wait_time() == 0
        window.record()
        now[0] += 0.5
    assert window.wait_time() == pytest.approx(150.0)  # the first attempt (t=0) expires at 300
    now[0] = 300.0
    assert window.wait_time() == 0
