"""The price book: the latest merged record per symbol and an ordered ring of updates."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from itertools import islice

from .parser import PriceUpdate

RECORD_FIELDS = ("price", "bid", "ask", "open_24h", "high_24h", "low_24h", "volume_24h", "change_24h_percent")


class PriceRecord:
    """One symbol's latest known state; never mutated after it is published."""

    __slots__ = (
        "answer_head",
        "ask",
        "bid",
        "change_24h_percent",
        "encoded",
        "event_time",
        "high_24h",
        "low_24h",
        "open_24h",
        "price",
        "price_time",
        "received_at",
        "source",
        "symbol",
        "volume_24h",
    )

    def __init__(self, symbol: str, received_at: float, source: str = "websocket") -> None:
        self.symbol = symbol
        self.price: Decimal | None = None
        self.bid: Decimal | None = None
        self.ask: Decimal | None = None
        self.open_24h: Decimal | None = None
        self.high_24h: Decimal | None = None
        self.low_24h: Decimal | None = None
        self.volume_24h: Decimal | None = None
        self.change_24h_percent: Decimal | None = None
        self.event_time: int | None = None
        self.price_time: int | None = None
        self.received_at = received_at
        self.source = source
        self.encoded: bytes | None = None  # SSE payload, filled by the first subscriber
        self.answer_head: str | None = None  # the fixed part of the /price answer, filled once

    def to_dict(self) -> dict[str, object]:
        """Every field as JSON-ready values (decimals as strings), for Redis."""
        data: dict[str, object] = {
            n: None if (v := getattr(self, n)) is None else str(v) for n in RECORD_FIELDS
        }
        data.update(
            symbol=self.symbol,
            event_time=self.event_time,
            price_time=self.price_time,
            received_at=self.received_at,
            source=self.source,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PriceRecord:
        """Rebuild a record written by `to_dict`."""
        record = cls(str(data["symbol"]), float(data["received_at"]), str(data["source"]))
        for name in RECORD_FIELDS:
            value = data.get(name)
            setattr(record, name, None if value is None else Decimal(value))
        record.event_time = data.get("event_time")
        record.price_time = data.get("price_time")
        return record


_EMPTY = PriceRecord("", 0.0)


def merge(old: PriceRecord | None, update: PriceUpdate, received_at: float, source: str) -> PriceRecord:
    """The record after `update`; an older price never overwrites a newer one."""
    o = _EMPTY if old is None else old
    u = update
    new = PriceRecord(u.symbol, received_at, source)
    # Spelled out field by field: this runs for every frame (see bench/streaming).
    when = u.event_time
    if u.price is not None and (o.price_time is None or when is None or when >= o.price_time):
        new.price, new.price_time = u.price, when
    else:
        new.price, new.price_time = o.price, o.price_time
    new.bid = o.bid if u.bid is None else u.bid
    new.ask = o.ask if u.ask is None else u.ask
    new.open_24h = o.open_24h if u.open_24h is None else u.open_24h
    new.high_24h = o.high_24h if u.high_24h is None else u.high_24h
    new.low_24h = o.low_24h if u.low_24h is None else u.low_24h
    new.volume_24h = o.volume_24h if u.volume_24h is None else u.volume_24h
    pct = u.change_24h_percent
    new.change_24h_percent = o.change_24h_percent if pct is None else pct
    new.event_time = o.event_time if when is None else when
    return new


class PriceBook:
    """Latest record per tracked symbol plus a bounded, numbered ring of every update.

    Readers of the ring (SSE streams, the Redis publisher) keep a cursor; one that falls
    more than `ring_size` updates behind is told so and resynchronises from the snapshot.
    """

    def __init__(self, symbols: Iterable[str], ring_size: int = 65536) -> None:
        self.symbols = tuple(symbols)
        self._tracked = frozenset(self.symbols)
        self._records: dict[str, PriceRecord] = {}
        self._ring: deque[tuple[int, PriceRecord]] = deque(maxlen=ring_size)
        self._seq = 0
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0
        self._closed = False
        # Called (under the book's lock, so in order) with every record made here rather
        # than received from Redis: the Redis publisher's feed.
        self.sink: Callable[[PriceRecord], None] | None = None

    @property
    def seq(self) -> int:
        """Number of the newest update (0 before the first)."""
        return self._seq

    def get(self, symbol: str) -> PriceRecord | None:
        """The latest record of `symbol`, or None."""
        return self._records.get(symbol)

    def snapshot(self) -> dict[str, PriceRecord]:
        """Every symbol's latest record."""
        return dict(self._records)

    def apply(
        self, update: PriceUpdate, received_at: float | None = None, source: str = "websocket"
    ) -> PriceRecord | None:
        """Merge one update; None when its symbol is not tracked."""
        if update.symbol not in self._tracked:
            return None
        with self._cond:
            record = merge(
                self._records.get(update.symbol),
                update,
                time.time() if received_at is None else received_at,
                source,
            )
            self._publish(record, local=True)
        return record

    def backfill(self, update: PriceUpdate, asked_at: float, received_at: float) -> bool:
        """Apply a REST update unless a WebSocket update arrived after the request was sent."""
        if update.symbol not in self._tracked:
            return False
        with self._cond:
            current = self._records.get(update.symbol)
            if current is not None and current.received_at >= asked_at:
                return False
            self._publish(merge(current, update, received_at, "rest"), local=True)
        return True

    def put(self, record: PriceRecord) -> bool:
        """Store a complete record (from Redis or REST) unless the book has a newer one."""
        if record.symbol not in self._tracked:
            return False
        with self._cond:
            current = self._records.get(record.symbol)
            if current is not None and current.received_at > record.received_at:
                return False
            self._publish(record, local=False)
        return True

    def _publish(self, record: PriceRecord, local: bool) -> None:
        self._records[record.symbol] = record
        self._seq += 1
        self._ring.append((self._seq, record))
        if self._waiting:
            self._cond.notify_all()
        if local and self.sink is not None:
            self.sink(record)

    def since(self, cursor: int) -> tuple[int, list[PriceRecord], bool]:
        """(new cursor, records after `cursor` in order, whether some were lost to the ring)."""
        with self._cond:
            return self._since(cursor)

    def _since(self, cursor: int) -> tuple[int, list[PriceRecord], bool]:
        count = self._seq - cursor
        if count <= 0:
            return self._seq, [], False
        lost = count > len(self._ring)
        newest = list(islice(reversed(self._ring), min(count, len(self._ring))))
        return self._seq, [record for _, record in reversed(newest)], lost

    def wait_since(self, cursor: int, timeout: float) -> tuple[int, list[PriceRecord], bool]:
        """Like `since`, but first block up to `timeout` for an update (or the book closing).

        One lock round trip per wake-up: with hundreds of SSE streams woken at once, the
        lock is what they queue for.
        """
        with self._cond:
            if self._seq <= cursor and not self._closed:
                self._waiting += 1
                try:
                    self._cond.wait_for(lambda: self._seq > cursor or self._closed, timeout)
                finally:
                    self._waiting -= 1
            return self._since(cursor)

    def close(self) -> None:
        """Wake every waiter for good (shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once the book was closed for shutdown."""
        return self._closed
