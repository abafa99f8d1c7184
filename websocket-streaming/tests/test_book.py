"""The price book: merging, ordering, the update ring, and the exact JSON answer."""

from __future__ import annotations

import gc
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
        "bid_qty",
        "ask",
        "ask_qty",
        "quote_id",
        "quote_time",
        "quote_age_seconds",
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


# ---- event ids and resuming (SSE Last-Event-ID) ------------------------------------------
def prices_of(records: list[PriceRecord]) -> list[str]:
    return [str(r.price) for r in records]


def resume_replay(book: PriceBook, last_id: str) -> list[str]:
    """The prices a stream resuming after `last_id` is sent before it goes live."""
    cursor, first = book.resume(last_id)
    return prices_of(first) + prices_of(book.since(cursor)[1])


def test_records_made_here_are_numbered_in_order_under_one_epoch() -> None:
    book = PriceBook(["BTCUSDT", "ETHUSDT"])
    first = book.apply(trade("BTCUSDT", "1", 1))
    second = book.apply(trade("ETHUSDT", "2", 2))
    assert first is not None
    assert second is not None
    assert first.event_id == f"{book.epoch}-1"
    assert second.event_id == f"{book.epoch}-2"
    book.new_epoch()
    third = book.apply(trade("BTCUSDT", "3", 3))
    assert third is not None
    assert third.epoch != first.epoch
    assert third.seq == 1


def test_a_record_from_redis_keeps_the_id_its_publisher_gave_it() -> None:
    leader, follower = PriceBook(["BTCUSDT"]), PriceBook(["BTCUSDT"])
    made = leader.apply(trade("BTCUSDT", "7", 1))
    assert made is not None
    received = PriceRecord.from_dict(json.loads(json.dumps(made.to_dict())))
    assert follower.put(received)
    assert follower.get("BTCUSDT").event_id == made.event_id  # type: ignore[union-attr]
    assert not follower.put(PriceRecord.from_dict(made.to_dict()))  # the same event twice: once


def test_resume_replays_exactly_the_updates_after_the_id() -> None:
    book = PriceBook(["BTCUSDT", "ETHUSDT"])
    ids = [book.apply(trade(("BTCUSDT", "ETHUSDT")[i % 2], str(i), i)).event_id for i in range(10)]  # type: ignore[union-attr]
    assert resume_replay(book, ids[3]) == [str(i) for i in range(4, 10)]
    assert resume_replay(book, ids[-1]) == []
    assert book.resume(None) == (book.seq, [])  # no id: live updates only


def test_an_unknown_id_gets_one_snapshot_record_per_symbol_newest_last() -> None:
    book = PriceBook(["BTCUSDT", "ETHUSDT", "BNBUSDT"], ring_size=16)
    for i, symbol in enumerate(["ETHUSDT", "BTCUSDT", "BNBUSDT", "ETHUSDT"]):
        book.apply(trade(symbol, str(i), i))
    for last_id in ["garbage", "", "x-y", f"{book.epoch}-999", "0123456789-1", "-5", "a" * 500]:
        cursor, first = book.resume(last_id)
        assert cursor == book.seq
        assert [(r.symbol, str(r.price)) for r in first] == [
            ("BTCUSDT", "1"),
            ("BNBUSDT", "2"),
            ("ETHUSDT", "3"),
        ]


def test_an_id_older_than_the_ring_gets_the_snapshot() -> None:
    book = PriceBook(["BTCUSDT", "ETHUSDT"], ring_size=16)
    old = book.apply(trade("BTCUSDT", "0", 0))
    assert old is not None
    for i in range(1, 40):
        book.apply(trade("ETHUSDT", str(i), i))
    assert resume_replay(book, old.event_id) == ["0", "39"]


def test_an_id_before_a_gap_gets_the_snapshot_one_after_it_resumes_exactly() -> None:
    book = PriceBook(["BTCUSDT", "ETHUSDT"])
    before = book.apply(trade("BTCUSDT", "1", 1))
    book.mark_gap()  # e.g. the Redis subscription was lost: updates may be missing here
    after = book.apply(trade("ETHUSDT", "2", 2))
    book.apply(trade("ETHUSDT", "3", 3))
    assert before is not None
    assert after is not None
    assert resume_replay(book, before.event_id) == ["1", "3"]  # snapshot: BTC, then ETH
    assert resume_replay(book, after.event_id) == ["3"]


def test_an_older_record_from_redis_is_refused_and_resumes_before_it_fall_back() -> None:
    book = PriceBook(["BTCUSDT"])
    mine = book.apply(trade("BTCUSDT", "5", 5), received_at=200.0)
    other = PriceBook(["BTCUSDT"])
    late = other.apply(trade("BTCUSDT", "4", 4), received_at=100.0)
    assert mine is not None
    assert late is not None
    assert not book.put(PriceRecord.from_dict(late.to_dict()))
    assert book.get("BTCUSDT") is mine
    assert book.resume(mine.event_id)[1] == [mine]  # the ring skipped an event: snapshot


def test_id_at_names_the_update_at_a_ring_position() -> None:
    book = PriceBook(["BTCUSDT"], ring_size=16)
    assert book.id_at(0) is None
    records = [book.apply(trade("BTCUSDT", str(i), i)) for i in range(20)]
    assert book.id_at(20) == records[19].event_id  # type: ignore[union-attr]
    assert book.id_at(5) == records[4].event_id  # type: ignore[union-attr]
    assert book.id_at(4) is None  # left the ring
    assert book.id_at(21) is None


def quote(symbol: str, update_id: int, bid: str, ask: str = "200", size: str = "1") -> PriceUpdate:
    d = Decimal
    return PriceUpdate(
        symbol,
        "bookTicker",
        None,
        bid=d(bid),
        ask=d(ask),
        bid_qty=d(size),
        ask_qty=d(size),
        update_id=update_id,
    )


def test_quotes_are_ordered_by_update_id_an_older_one_is_dropped_and_counted() -> None:
    book = PriceBook(["BTCUSDT"])
    assert book.apply(quote("BTCUSDT", 10, "100", size="2")) is not None
    assert book.apply(quote("BTCUSDT", 9, "99")) is None  # older by `u`: e.g. the lagging line
    assert book.apply(quote("BTCUSDT", 10, "98")) is None  # the same `u` again
    record = book.get("BTCUSDT")
    assert record is not None
    assert (record.bid, record.bid_qty, record.quote_id, record.kind) == (Decimal(100), Decimal(2), 10, "quote")
    assert book.stale_quotes == 2
    assert book.seq == 1  # nothing dropped reached the ring


def test_a_ticker_bid_ask_never_replaces_a_book_ticker_quote() -> None:
    book = PriceBook(["BTCUSDT"])
    ticker = PriceUpdate("BTCUSDT", "24hrTicker", 5, price=Decimal(101), bid=Decimal(1), ask=Decimal(2))
    book.apply(ticker)
    assert book.get("BTCUSDT").bid == Decimal(1)  # type: ignore[union-attr]  # no bookTicker yet
    book.apply(quote("BTCUSDT", 3, "100.5", "100.7"))
    book.apply(PriceUpdate("BTCUSDT", "24hrTicker", 6, price=Decimal(102), bid=Decimal(1), ask=Decimal(2)))
    record = book.get("BTCUSDT")
    assert record is not None
    assert (record.price, record.bid, record.ask, record.kind) == (
        Decimal(102),
        Decimal("100.5"),
        Decimal("100.7"),
        "price",
    )


def test_through_redis_an_older_quote_never_overwrites_a_newer_one() -> None:
    leader, follower = PriceBook(["BTCUSDT"]), PriceBook(["BTCUSDT"])
    newer = leader.apply(quote("BTCUSDT", 20, "100"), received_at=1.0)
    other = PriceBook(["BTCUSDT"])  # another publisher (a solo worker) that lagged behind
    older = other.apply(quote("BTCUSDT", 19, "99"), received_at=2.0)
    late_trade = other.apply(trade("BTCUSDT", "99.5", 5), received_at=3.0)
    assert newer is not None
    assert older is not None
    assert late_trade is not None
    assert follower.put(PriceRecord.from_dict(newer.to_dict()))
    assert not follower.put(PriceRecord.from_dict(older.to_dict()))
    assert follower.put(PriceRecord.from_dict(late_trade.to_dict()))
    record = follower.get("BTCUSDT")
    assert record is not None
    assert (record.price, record.bid, record.quote_id) == (Decimal("99.5"), Decimal(100), 20)


def test_a_quote_round_trips_through_redis_json() -> None:
    book = PriceBook(["BTCUSDT"])
    made = book.apply(quote("BTCUSDT", 42, "100.10", "100.20", "0.5"), received_at=1000.25)
    assert made is not None
    copy = PriceRecord.from_dict(json.loads(json.dumps(made.to_dict())))
    fields = ("bid", "bid_qty", "ask", "ask_qty", "quote_id", "quote_at", "kind", "event_id")
    assert [getattr(copy, f) for f in fields] == [getattr(made, f) for f in fields]
    answer = json.loads(price_answer(copy, stale_after=10, now=1001.0), parse_float=Decimal)
    assert answer["bid_qty"] == Decimal("0.5")
    assert answer["quote_time"] == 1000250
    assert answer["quote_age_seconds"] == Decimal("0.750")


def test_resume_finds_an_id_through_the_index_until_it_leaves_the_ring() -> None:
    book = PriceBook(["BTCUSDT"], ring_size=16)
    ids = [book.apply(trade("BTCUSDT", str(i), i)).event_id for i in range(40)]  # type: ignore[union-attr]
    assert book.resume(ids[30]) == (31, [])
    assert book.resume(ids[24]) == (25, [])  # the oldest still held
    cursor, snapshot = book.resume(ids[23])  # evicted: the snapshot
    assert cursor == 40
    assert len(snapshot) == 1
    assert len(book._index) == 16  # the index forgets what the ring forgot


def test_a_price_waiter_is_not_woken_by_quotes_only_by_a_price() -> None:
    book = PriceBook(["BTCUSDT"])
    woken: list[tuple[int, list[PriceRecord], bool]] = []
    waiter = threading.Thread(target=lambda: woken.append(book.wait_since(0, 2.0, frozenset({"price"}))))
    waiter.start()
    for n in range(1, 50):
        book.apply(quote("BTCUSDT", n, "100"))
    time.sleep(0.2)
    assert woken == []  # 49 quotes, still asleep
    book.apply(trade("BTCUSDT", "101", 1))
    waiter.join(2.0)
    [(cursor, records, lost)] = woken
    assert (cursor, len(records), lost) == (50, 50, False)  # the caller filters the quotes out


def candle_event(book: PriceBook, open_time: int, close: str, interval: str = "1m") -> str:
    payload = f'{{"symbol":"BTCUSDT","interval":"{interval}","open_time":{open_time},"close":{close}}}'
    return book.add_event("BTCUSDT", payload, interval, open_time)


def test_a_candle_event_from_redis_keeps_its_publishers_id_and_order() -> None:
    leader, follower = PriceBook(["BTCUSDT"]), PriceBook(["BTCUSDT"])
    published: list[PriceRecord] = []
    leader.sink = published.append  # what a leader's bridge publishes, in ring order
    leader.apply(PriceUpdate("BTCUSDT", "trade", 1, price=Decimal("1.5")))
    first = candle_event(leader, 0, "1.5")
    leader.apply(PriceUpdate("BTCUSDT", "trade", 2, price=Decimal("2.5")))
    for record in published:
        follower.put(PriceRecord.from_dict(json.loads(json.dumps(record.to_dict()))))
    follower.put(PriceRecord.from_dict(json.loads(json.dumps(published[1].to_dict()))))  # a repeat: once
    assert [r.kind for r in published] == ["price", "candle", "price"]
    assert first.rpartition("-")[0] == f"{leader.epoch}c"
    cursor, first_after = follower.resume(first)
    assert first_after == []  # found in the ring: resumed exactly
    _, after, _ = follower.since(cursor)
    assert [r.event_id for r in after] == [published[2].event_id]
    assert follower.seq == 3
    candle = follower.ordered_snapshot()[1][0]
    assert candle.encoded == published[1].encoded  # the same SSE message, the same id


def test_a_snapshot_holds_the_latest_event_of_the_two_newest_candles_per_interval() -> None:
    book = PriceBook(["BTCUSDT"])
    for open_time, close in [(0, "1"), (60_000, "2"), (60_000, "3"), (120_000, "4"), (120_000, "5")]:
        candle_event(book, open_time, close)
    candle_event(book, 0, "9", interval="1h")
    _, records = book.ordered_snapshot()
    data = [r.encoded.decode().partition("data: ")[2].strip() for r in records if r.encoded]
    assert [json.loads(d)["close"] for d in data] == [3, 5, 9]  # by ring position, oldest first


@pytest.mark.parametrize(
    "change",
    [{"candle": "{}\n\ndata: injected"}, {"candle": None}, {"event_time": "soon"}, {"id": "nope"}],
)
def test_a_malformed_candle_event_from_redis_is_refused(change: dict) -> None:
    book = PriceBook(["BTCUSDT"])
    published: list[PriceRecord] = []
    book.sink = published.append
    candle_event(book, 0, "1")
    with pytest.raises(ValueError, match="candle event"):
        PriceRecord.from_dict({**published[0].to_dict(), **change})


def quote_update(update_id: int, texts: tuple[str, str, str, str]) -> PriceUpdate:
    bid, bid_qty, ask, ask_qty = map(Decimal, texts)
    return PriceUpdate(
        "BTCUSDT", "bookTicker", None, bid=bid, ask=ask, update_id=update_id, bid_qty=bid_qty, ask_qty=ask_qty
    )


def test_a_fast_path_quote_makes_the_record_a_parsed_one_makes() -> None:
    parsed, fast = PriceBook(["BTCUSDT"]), PriceBook(["BTCUSDT"])
    quotes = [
        (10, ("90000.50000000", "0.00012000", "90000.51000000", "3.5")),
        (12, ("90000.4", "1", "90000.6", "2")),
    ]
    for book in (parsed, fast):
        book.apply(trade("BTCUSDT", "90000.5", 1000), received_at=1.0)
    for n, (update_id, texts) in enumerate(quotes):
        parsed.apply(quote_update(update_id, texts), received_at=2.0 + n)
        fast.apply_quote("BTCUSDT", update_id, texts, 2.0 + n)
    stale = quote_update(11, ("1", "1", "2", "2"))  # older by `u`: dropped and counted, either way
    assert parsed.apply(stale, received_at=9.0) is None
    assert fast.apply_quote("BTCUSDT", 11, ("1", "1", "2", "2"), 9.0) is None
    assert fast.apply_quote("ETHUSDT", 13, ("1", "1", "2", "2"), 9.0) is None  # not tracked
    assert (parsed.stale_quotes, fast.stale_quotes, parsed.seq, fast.seq) == (1, 1, 3, 3)
    mine, theirs = parsed.get("BTCUSDT"), fast.get("BTCUSDT")
    assert mine is not None
    assert theirs is not None
    assert price_answer(theirs, 10, now=5.0) == price_answer(mine, 10, now=5.0)
    assert '"bid":90000.4,"bid_qty":1,"ask":90000.6,"ask_qty":2,' in price_answer(theirs, 10, now=5.0)
    assert {**theirs.to_dict(), "id": ""} == {**mine.to_dict(), "id": ""}
    assert (theirs.event_id, theirs.pos) == (f"{fast.epoch}-3", 3)  # numbered as every record made here
    assert resume_replay(fast, f"{fast.epoch}-2") == [prices_of([theirs])[0]]
    assert (theirs.bid, theirs.bid_qty, theirs.ask, theirs.ask_qty) == (
        Decimal("90000.4"),
        1,
        Decimal("90000.6"),
        2,
    )
    assert isinstance(theirs.bid, Decimal)
    assert theirs.stored("bid") is theirs.bid  # made once, then kept


def test_records_are_left_out_of_the_cyclic_garbage_collector() -> None:
    """The ring holds 65,536 records: a full collection walking them at bookTicker rates costs
    a third of the ingest (bench/streaming). A record holds no container, so needs no walk."""
    book = PriceBook(["BTCUSDT"])
    made = [
        book.apply(trade("BTCUSDT", "1.5", 1)),
        book.apply_quote("BTCUSDT", 7, ("1.4", "2", "1.6", "3"), 2.0),
        PriceRecord.from_dict({**PriceRecord("BTCUSDT", 1.0).to_dict(), "id": "abc-1"}),
        PriceRecord("BTCUSDT", 1.0),
    ]
    book.add_event("BTCUSDT", "{}", "1m", 0)
    _, ring, _ = book.since(0)
    assert len(ring) == 3
    assert [gc.is_tracked(record) for record in [*made, *ring]] == [False] * 7
