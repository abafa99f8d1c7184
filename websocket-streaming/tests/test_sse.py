"""/stream over a real HTTP server: every update, in order, filtered, with heartbeats."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal

import pytest
import redis
import requests
from fake_exchange import FakeExchange, trade_event
from flask import Flask
from sardag_testing import repeating, wait_until
from websocket_streaming import get_service
from websocket_streaming.book import PriceBook, PriceRecord
from websocket_streaming.parser import PriceUpdate

pytestmark = [pytest.mark.websocket, pytest.mark.api]
unit = pytest.mark.unit  # the app, the fake exchange and the HTTP server all run in this process


class EventStream:
    """Reads /stream like a browser's EventSource: yields (kind, text) per message, where kind
    is "comment" or the event name; keeps `last_id` and `retry` as EventSource does."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.last_id: str | None = None
        self.retry: int | None = None
        self.ids: list[str | None] = []  # the id of every event, in order
        self._messages = self._read()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return self._messages

    def __next__(self) -> tuple[str, str]:
        return next(self._messages)

    def _read(self) -> Iterator[tuple[str, str]]:
        event, data, comment, block_id = "message", "", None, None
        for line in self.response.iter_lines(decode_unicode=True):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if line.startswith(":"):
                comment = line[1:].strip()
            elif field == "event":
                event = value
            elif field == "data":
                data = value
            elif field == "id":
                block_id = value
            elif field == "retry":
                self.retry = int(value)
            elif line == "":
                if block_id is not None:  # set on dispatch, even without data (spec)
                    self.last_id = block_id
                if comment is not None:
                    yield "comment", comment
                if data:
                    self.ids.append(block_id)
                    yield event, data
                event, data, comment, block_id = "message", "", None, None

    def close(self) -> None:
        """Drop the connection, as a browser losing the network would."""
        self.response.close()


def open_stream(
    base: str, query: str = "", last_event_id: str | None = None
) -> tuple[requests.Response, EventStream]:
    """Subscribe and wait for the `: connected` comment, so no later update can be missed."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    response = requests.get(f"{base}/stream{query}", stream=True, timeout=5, headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = EventStream(response)
    assert next(stream) == ("comment", "connected")
    return response, stream


def collect_prices(messages: Iterable[tuple[str, str]], count: int) -> list[tuple[str, Decimal]]:
    """The next `count` price events as (symbol, price)."""
    prices = []
    for kind, data in messages:
        if kind == "price":
            body = json.loads(data, parse_float=Decimal)
            prices.append((body["symbol"], body["price"]))
            if len(prices) == count:
                break
    return prices


@unit
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


@unit
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


@unit
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


@unit
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


class Feed:
    """Numbered trades of alternating symbols through the fake; `step` sends the next one."""

    def __init__(self, fake: FakeExchange, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")) -> None:
        self.fake = fake
        self.symbols = symbols
        self.sent: list[tuple[str, Decimal]] = []

    def step(self) -> None:
        """Send the next trade."""
        n = len(self.sent)
        symbol = self.symbols[n % len(self.symbols)]
        price = Decimal(f"{1000 + n}.5")
        self.fake.send(trade_event(symbol, str(price), n), stream=f"{symbol.lower()}@trade")
        self.sent.append((symbol, price))

    def flowing(self) -> AbstractContextManager[None]:
        """Keep updates flowing (one every 2 ms) while the `with` block runs."""
        return repeating(self.step, 0.002)

    def wait_for(self, count: int) -> None:
        """Wait until `count` updates were sent in all."""
        wait_until(lambda: len(self.sent) >= count, 10.0, f"{count} updates sent")


def subscribed(app: Flask) -> bool:
    """True once /health says the app's Redis subscription (and lock calls) work."""
    upstream = app.test_client().get("/health").get_json()["checks"]["upstream"]
    return upstream["detail"].get("redis") == "ok"


TRADE_IDS = itertools.count(1)  # a trade id is never reused (the service drops repeats)


def send_trades(fake: FakeExchange, trades: list[tuple[str, str]]) -> None:
    """Send (symbol, price) trades in order, each with a new trade id."""
    for symbol, price in trades:
        fake.send(trade_event(symbol, price, next(TRADE_IDS)), stream=f"{symbol.lower()}@trade")


@unit
def test_a_reconnect_with_last_event_id_gets_exactly_the_events_it_missed_then_live_ones(
    fake: FakeExchange,
    app: Flask,
    serve: Callable[[Flask], str],
) -> None:
    base = serve(app)
    _, first = open_stream(base)
    assert first.retry == 1000  # SSE_RETRY_SECONDS: EventSource waits this long to reconnect
    feed = Feed(fake)
    with feed.flowing():
        before = collect_prices(first, 50)
        first.close()  # mid-stream, while updates keep flowing
        feed.wait_for(len(feed.sent) + 100)
        _, second = open_stream(base, last_event_id=first.last_id)
        feed.wait_for(len(feed.sent) + 50)  # and live ones after the replay
    after = collect_prices(second, len(feed.sent) - len(before))
    second.close()
    assert before + after == feed.sent
    ids = first.ids + second.ids
    assert None not in ids
    assert len(set(ids)) == len(ids)


@unit
def test_an_id_older_than_the_ring_gets_one_snapshot_event_per_symbol_then_live_ones(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    base = serve(make_app(WS_RING_SIZE=16))
    _, first = open_stream(base)
    send_trades(fake, [("BTCUSDT", "1.5")])
    assert collect_prices(first, 1) == [("BTCUSDT", Decimal("1.5"))]
    first.close()
    send_trades(fake, [(("ETHUSDT", "BTCUSDT")[n % 2], f"{n}.25") for n in range(2, 40)])
    _, watcher = open_stream(base, "?symbols=BNBUSDT")  # a live stream shows when the feed is through
    send_trades(fake, [("BNBUSDT", "600.1")])
    assert collect_prices(watcher, 1) == [("BNBUSDT", Decimal("600.1"))]
    watcher.close()

    _, second = open_stream(base, last_event_id=first.last_id)
    snapshot = collect_prices(second, 3)
    send_trades(fake, [("ETHUSDT", "99.5")])
    live = collect_prices(second, 1)
    second.close()
    assert snapshot == [
        ("ETHUSDT", Decimal("38.25")),
        ("BTCUSDT", Decimal("39.25")),
        ("BNBUSDT", Decimal("600.1")),
    ]
    assert live == [("ETHUSDT", Decimal("99.5"))]


@unit
@pytest.mark.parametrize("last_id", ["not-an-id", "0123456789-5", "../../etc/passwd", "x" * 2000])
def test_an_unknown_last_event_id_gets_the_snapshot_never_an_error(
    fake: FakeExchange,
    app: Flask,
    serve: Callable[[Flask], str],
    last_id: str,
) -> None:
    base = serve(app)
    _, watcher = open_stream(base)
    send_trades(fake, [("BTCUSDT", "10.5"), ("ETHUSDT", "20.5")])
    assert len(collect_prices(watcher, 2)) == 2
    watcher.close()
    _, stream = open_stream(base, last_event_id=last_id)
    assert collect_prices(stream, 2) == [("BTCUSDT", Decimal("10.5")), ("ETHUSDT", Decimal("20.5"))]
    stream.close()


@unit
def test_heartbeats_keep_a_filtered_streams_id_inside_the_ring(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    base = serve(make_app(WS_RING_SIZE=16, SSE_HEARTBEAT_SECONDS=0.2))
    _, first = open_stream(base, "?symbols=ETHUSDT")
    send_trades(fake, [("ETHUSDT", "3000.5")])
    assert collect_prices(first, 1) == [("ETHUSDT", Decimal("3000.5"))]
    send_trades(fake, [("BTCUSDT", f"{n}.5") for n in range(40)])  # pushes that event out of the ring
    wait_until(lambda: next(first) == ("comment", "heartbeat") and first.last_id != first.ids[-1], 5.0, "an id")
    first.close()
    _, second = open_stream(base, "?symbols=ETHUSDT", last_event_id=first.last_id)
    send_trades(fake, [("ETHUSDT", "3001.5")])
    assert collect_prices(second, 1) == [("ETHUSDT", Decimal("3001.5"))]  # no snapshot replayed
    second.close()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.parametrize("leader_first", [True, False], ids=["leader-to-follower", "follower-to-leader"])
def test_an_id_from_one_worker_resumes_exactly_on_another_sharing_redis(
    fake: FakeExchange,
    redis_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
    leader_first: bool,
) -> None:
    # Two apps sharing one Redis stand for two workers (or instances) behind one address.
    apps = [redis_app(), redis_app()]
    wait_until(lambda: fake.open_connections() == 1, 3.0, "one upstream connection")
    wait_until(lambda: all(subscribed(app) for app in apps), 3.0, "both apps subscribed")
    apps.sort(key=lambda app: get_service(app).role != "leader", reverse=not leader_first)
    here, there = (serve(app) for app in apps)
    _, first = open_stream(here)
    feed = Feed(fake)
    with feed.flowing():
        before = collect_prices(first, 50)
        first.close()
        feed.wait_for(len(feed.sent) + 100)
        _, second = open_stream(there, last_event_id=first.last_id)
        feed.wait_for(len(feed.sent) + 50)
    after = collect_prices(second, len(feed.sent) - len(before))
    second.close()
    assert before + after == feed.sent


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.redis
def test_ids_from_before_a_hole_in_the_publishers_sequence_fall_back_to_the_snapshot(
    redis_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
    redis_url: str,
    prefix: str,
) -> None:
    reader = redis_app(INGEST_ENABLED=False)  # serves only what a leader publishes
    wait_until(lambda: subscribed(reader), 3.0, "the subscription")
    base = serve(reader)
    leader = PriceBook(["BTCUSDT", "ETHUSDT"])  # another instance's book, published by hand
    made = [
        leader.apply(PriceUpdate(s, "trade", n, price=Decimal(f"{n}.5")))
        for n, s in enumerate(["BTCUSDT", "ETHUSDT"] * 4)
    ]
    client = redis.Redis.from_url(redis_url)

    def publish(*records: PriceRecord | None, last: int = 0) -> None:
        batch = [r.to_dict() for r in records if r is not None]
        message = {"origin": "elsewhere", "epoch": leader.epoch, "last": last, "records": batch}
        client.publish(f"{prefix}price-updates", json.dumps(message))

    def resumed(record: PriceRecord | None, count: int) -> list[tuple[str, Decimal]]:
        assert record is not None
        _, stream = open_stream(base, last_event_id=record.event_id)
        got = collect_prices(stream, count)
        stream.close()
        return got

    def price(n: int) -> tuple[str, Decimal]:
        return (("BTCUSDT", "ETHUSDT")[n % 2], Decimal(f"{n}.5"))

    publish(*made[:3])
    wait_until(lambda: get_service(reader).book.seq == 3, 3.0, "three updates")
    assert resumed(made[0], 2) == [price(1), price(2)]  # no hole yet: exact replay
    publish(made[5])  # made[3] and made[4] were lost on the way
    wait_until(lambda: get_service(reader).book.seq == 4, 3.0, "the fourth update")
    assert resumed(made[0], 2) == [price(2), price(5)]  # before the hole: the snapshot
    _, stream = open_stream(base, last_event_id=made[5].event_id)  # type: ignore[union-attr]
    publish(made[6])
    assert collect_prices(stream, 1) == [price(6)]  # after the hole: exact (nothing missed)
    stream.close()
    publish(last=8)  # a heartbeat: the publisher is at 8, so made[7] never arrived here
    wait_until(lambda: get_service(reader).book.resume(made[6].event_id)[1], 3.0, "the hole")  # type: ignore[union-attr]
    assert resumed(made[6], 2) == [price(5), price(6)]


def book_ticker(symbol: str, update_id: int, bid: str) -> dict:
    """A bookTicker payload (no `e`, no `E`) with a spread of 0.1 and sizes."""
    ask = str(Decimal(bid) + Decimal("0.1"))
    return {"u": update_id, "s": symbol, "b": bid, "B": "1.5", "a": ask, "A": "2.5"}


def collect(messages: Iterable[tuple[str, str]], count: int) -> list[tuple[str, str, Decimal | None]]:
    """The next `count` price or quote events as (type, symbol, price or bid)."""
    got = []
    for kind, data in messages:
        if kind in ("price", "quote"):
            body = json.loads(data, parse_float=Decimal)
            got.append((kind, body["symbol"], body["price"] if kind == "price" else body["bid"]))
            if len(got) == count:
                break
    return got


@unit
def test_events_price_and_quote_arrive_in_order_and_resume_exactly_with_last_event_id(
    fake: FakeExchange,
    app: Flask,
    serve: Callable[[Flask], str],
) -> None:
    base = serve(app)
    _, first = open_stream(base, "?events=price,quote")
    sent: list[tuple[str, str, Decimal | None]] = []

    def send(n: int) -> None:
        if n % 3:
            fake.send(book_ticker("BTCUSDT", 1000 + n, f"{500 + n}.5"), stream="btcusdt@bookTicker")
            sent.append(("quote", "BTCUSDT", Decimal(f"{500 + n}.5")))
        else:
            send_trades(fake, [("BTCUSDT", f"{700 + n}.25")])
            sent.append(("price", "BTCUSDT", Decimal(f"{700 + n}.25")))

    for n in range(30):
        send(n)
    before = collect(first, 30)
    first.close()
    for n in range(30, 60):
        send(n)
    _, second = open_stream(base, "?events=price,quote", last_event_id=first.last_id)
    after = collect(second, 30)
    second.close()
    assert before + after == sent
    _, quotes_only = open_stream(base, "?events=quote", last_event_id=first.ids[0])
    quotes = [e for e in sent[1:] if e[0] == "quote"]
    assert collect(quotes_only, len(quotes)) == quotes
    quotes_only.close()


@unit
def test_a_quote_event_carries_best_bid_ask_with_sizes_and_its_age(
    fake: FakeExchange,
    app: Flask,
    serve: Callable[[Flask], str],
) -> None:
    _, stream = open_stream(serve(app), "?events=quote")
    fake.send(book_ticker("ETHUSDT", 77, "3000.10"), stream="ethusdt@bookTicker")
    kind, data = next(m for m in stream if m[0] != "comment")
    body = json.loads(data, parse_float=Decimal)
    assert kind == "quote"
    assert (body["bid"], body["bid_qty"], body["ask"], body["ask_qty"]) == (
        Decimal("3000.10"),
        Decimal("1.5"),
        Decimal("3000.20"),
        Decimal("2.5"),
    )
    assert body["quote_id"] == 77
    assert 0 <= body["quote_age_seconds"] < 5
    stream.close()


@unit
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?events=trade", "events"),
        ("?events=", "events"),
        ("?events=price,price", "events"),
        ("?events=price&events=quote", "events"),
        ("?events=PRICE", "events"),
        ("?symbols=btcusdt&symbols=ethusdt", "symbols"),
    ],
)
def test_bad_stream_parameters_answer_400_naming_the_field(app: Flask, query: str, field: str) -> None:
    answer = app.test_client().get(f"/stream{query}")
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "validation_error"
    assert [d["field"] for d in body["details"]] == [field]


@unit
def test_one_client_cannot_take_every_stream_slot(
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    base = serve(make_app(SSE_MAX_SUBSCRIBERS=10, SSE_MAX_STREAMS_PER_CLIENT=2))
    first, _ = open_stream(base)
    second, _ = open_stream(base)
    refused = requests.get(f"{base}/stream", timeout=5)
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_streams"
    assert "Retry-After" in refused.headers
    assert requests.get(f"{base}/stats", timeout=5).json()["sse_subscribers"] == 2
    first.close()
    second.close()


def stalled_subscriber(base: str, query: str = "") -> socket.socket:
    """A client that subscribes, reads up to `: connected`, then stops reading (a tiny
    receive buffer, so the server's writes block soon)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /stream{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    seen = b""
    while b": connected" not in seen:
        seen += sock.recv(1)
    return sock


def flood(
    fake: FakeExchange, count: int, first_written_to: socket.socket | None = None
) -> list[tuple[str, Decimal]]:
    """`count` BTCUSDT trades, each a new price; returns them as sent. With `first_written_to`,
    the rest follow once the first event reached that subscriber's socket (its stream may
    otherwise wake up first with the whole backlog queued, and overflow before any event)."""
    trades = [("BTCUSDT", f"{10000 + n}.125") for n in range(count)]
    if first_written_to is not None:
        send_trades(fake, trades[:1])
        wait_until(lambda: b"event: price" in unread(first_written_to), 5.0, "the first event written")
        trades_left = trades[1:]
    else:
        trades_left = trades
    send_trades(fake, trades_left)
    return [(s, Decimal(p)) for s, p in trades]


def unread(sock: socket.socket) -> bytes:
    """What `sock` received and nobody read yet (left in its buffer)."""
    try:
        return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def metric_values(base: str, wanted: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """The value of each (metric name, label that must appear) of `wanted` in `base`'s /metrics."""
    found = {}
    for line in requests.get(f"{base}/metrics", timeout=5).text.splitlines():
        name, _, rest = line.partition("{")
        for key in wanted:
            if key[0] == name and key[1] in rest:
                found[key] = float(line.rsplit(" ", 1)[1])
    return found


@unit
@pytest.mark.slow
def test_a_subscriber_that_falls_behind_gets_overflow_then_last_event_id_recovers_every_event(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    app = make_app(SSE_QUEUE_EVENTS=16)
    base = serve(app)
    sock = stalled_subscriber(base)
    sent = flood(fake, 3000, sock)  # far more than the socket buffers hold: the server's write blocks
    wait_until(lambda: get_service(app).book.seq >= 3000, 10.0, "every trade applied")
    sock.settimeout(10)
    raw = b""
    while chunk := sock.recv(65536):  # now read: the stream ends after its overflow message
        raw += chunk
    sock.close()
    # the events as sent (the stream is HTTP/1.1 chunked: chunk sizes sit between messages)
    *events, overflow = re.findall(r"(?:id: (\S+)\n)?event: (\w+)\ndata: (.*)\n\n", raw.decode())
    assert overflow[:2] == ("", "overflow")  # no id: the client's last id stays the last event's
    notice = json.loads(overflow[2])
    assert notice["reason"] == "slow_consumer"
    assert notice["dropped"] > 16
    got = [("BTCUSDT", json.loads(data, parse_float=Decimal)["price"]) for _, _, data in events]
    last_id = events[-1][0]
    assert notice["last_id"] == last_id
    _, again = open_stream(base, last_event_id=last_id)
    rest = collect_prices(again, len(sent) - len(got))
    again.close()
    assert got + rest == sent  # nothing lost, nothing twice
    stats = requests.get(f"{base}/stats", timeout=5).json()
    assert stats["sse_overflows"] == 1
    assert stats["sse_dropped"] == notice["dropped"]
    exported = {  # what the alert and the runbook read, once the metrics tick has run
        ("sardag_sse_dropped_total", ""): float(notice["dropped"]),
        ("sardag_sse_closed_total", 'reason="overflow"'): 1.0,
    }
    wait_until(lambda: metric_values(base, exported) == exported, 5.0, "the metrics exported")


@unit
@pytest.mark.slow
def test_a_subscriber_that_never_reads_is_cut_after_the_write_timeout_and_its_slot_freed(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    app = make_app(SSE_WRITE_TIMEOUT_SECONDS=0.5, SSE_MAX_SUBSCRIBERS=1)
    base = serve(app)
    sock = stalled_subscriber(base)
    flood(fake, 3000)

    slots = app.extensions["websocket_streaming.sse"]
    wait_until(lambda: slots.count == 0, 10.0, "the stalled stream's slot back")
    assert requests.get(f"{base}/stats", timeout=5).json()["sse_write_timeouts"] == 1
    sock.close()
    answer, _ = open_stream(base)  # the one slot serves the next client
    answer.close()
