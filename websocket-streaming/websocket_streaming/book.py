"""The price book: the latest merged record per symbol and an ordered ring of updates.

Event ids (what SSE sends as `id:`): `<epoch>-<seq>`, given once, by the process that made
the record from an upstream frame or a REST backfill. `epoch` is random per serving process,
`seq` counts that process's records. Records received through Redis keep the id their
publisher gave them, so every worker sharing one Redis knows an event by the same id, and a
new leader's ids can never be confused with the old leader's.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from itertools import islice
from typing import Any, overload

import msgspec

from .parser import BOOK_TICKER, PriceUpdate

TRACEPARENT_MAX = 55  # a version-00 traceparent: 00-<32 hex>-<16 hex>-<2 hex>
RECORD_FIELDS = (
    "price",
    "bid",
    "bid_qty",
    "ask",
    "ask_qty",
    "open_24h",
    "high_24h",
    "low_24h",
    "volume_24h",
    "change_24h_percent",
)
PRICE, QUOTE = "price", "quote"  # what changed in a record: its SSE event type
CANDLE = "candle"  # a candle changed: a ring entry only (candles.py), never a symbol's record
# Candles per symbol and interval a snapshot holds: the newest (open, or the last closed when
# no trade opened the next yet) and the one before it (closed: its final state).
CANDLE_SNAPSHOT = 2
QUOTE_FIELDS = ("bid", "bid_qty", "ask", "ask_qty")
_STORED = {name: f"_{name}" for name in QUOTE_FIELDS}  # the slot each quote field is kept in


class _ExactDecimal:
    """A quote field of a record: kept as given, a Decimal or the exchange's text that
    `parser.fast_quote` validated as exactly its own Decimal; read, always a Decimal.

    The busiest stream's quotes are served as text and ordered by `u`: most are never read
    as numbers, so the Decimal is made on the first read only (bench/streaming).
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot: Any = owner.__dict__[_STORED[name]]  # the storage slot's member descriptor

    @overload
    def __get__(self, record: None, owner: type | None = None) -> _ExactDecimal: ...
    @overload
    def __get__(self, record: PriceRecord, owner: type | None = None) -> Decimal | None: ...
    def __get__(self, record: PriceRecord | None, owner: type | None = None) -> Decimal | _ExactDecimal | None:
        if record is None:
            return self
        value = self._slot.__get__(record, owner)
        if type(value) is str:
            value = Decimal(value)
            self._slot.__set__(record, value)  # the same number: a record still never changes
        return value  # type: ignore[no-any-return]

    def __set__(self, record: PriceRecord, value: Decimal | str | None) -> None:
        self._slot.__set__(record, value)


class PriceRecord(msgspec.Struct, gc=False, eq=False):
    """One symbol's latest known state; never mutated after it is published.

    A struct the cyclic garbage collector does not track (`gc=False`: it holds only numbers,
    text, bytes and None, so it can be in no cycle): the ring keeps 65,536 of them, and the
    full collections that bookTicker's rate of new records brings on walked them all, a
    third of its ingest (bench/streaming). Compared by identity, as a plain object is.
    """

    symbol: str
    received_at: float
    source: str = "websocket"
    price: Decimal | None = None
    _bid: Decimal | str | None = None  # the storage of each quote field (see _ExactDecimal)
    _bid_qty: Decimal | str | None = None
    _ask: Decimal | str | None = None
    _ask_qty: Decimal | str | None = None
    open_24h: Decimal | None = None
    high_24h: Decimal | None = None
    low_24h: Decimal | None = None
    volume_24h: Decimal | None = None
    change_24h_percent: Decimal | None = None
    event_time: int | None = None
    price_time: int | None = None
    kind: str = PRICE  # QUOTE when the update that made it was a bookTicker
    quote_id: int | None = None  # bookTicker `u` of the quote; None: from a 24 h ticker
    quote_at: float | None = None  # local time the quote was received (epoch s)
    epoch: str = ""  # event id `<epoch>-<seq>`: given by the book that made the record
    seq: int = 0
    pos: int = 0  # position in this process's ring (set when the book publishes it)
    encoded: bytes | None = None  # SSE payload, filled by the first subscriber
    answer_head: str | None = None  # the fixed part of the /price answer, filled once
    trace: str | None = None  # W3C traceparent of a sampled update (shared/tracing.py)

    bid = _ExactDecimal()
    bid_qty = _ExactDecimal()
    ask = _ExactDecimal()
    ask_qty = _ExactDecimal()

    def stored(self, name: str) -> Decimal | str | None:
        """Field `name` as kept: for a quote field maybe the exchange's text, whose str() is the
        Decimal's (what answers and Redis write, without making the Decimal)."""
        return getattr(self, _STORED.get(name, name))  # type: ignore[no-any-return]

    @property
    def event_id(self) -> str:
        """`<epoch>-<seq>`: the SSE id of this update, the same in every worker."""
        return f"{self.epoch}-{self.seq}"

    def to_dict(self) -> dict[str, object]:
        """Every field as JSON-ready values (decimals as strings), for Redis."""
        data: dict[str, object] = {n: None if (v := self.stored(n)) is None else str(v) for n in RECORD_FIELDS}
        data.update(
            symbol=self.symbol,
            event_time=self.event_time,
            price_time=self.price_time,
            received_at=self.received_at,
            source=self.source,
            id=self.event_id,
            kind=self.kind,
            quote_id=self.quote_id,
            quote_at=self.quote_at,
        )
        if self.trace is not None:
            data["traceparent"] = self.trace
        if self.kind is CANDLE and self.encoded is not None:  # its /candles object, as sent
            data["candle"] = candle_payload(self.encoded)
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
        record.kind = QUOTE if data.get("kind") == QUOTE else PRICE
        if data.get("kind") == CANDLE:
            _as_candle_event(record, data)
        quote_id, quote_at = data.get("quote_id"), data.get("quote_at")
        record.quote_id = quote_id if type(quote_id) is int else None
        record.quote_at = float(quote_at) if isinstance(quote_at, int | float) else None
        parsed = parse_event_id(data.get("id"))
        if parsed is not None:
            record.epoch, record.seq = parsed
        trace = data.get("traceparent")
        if isinstance(trace, str) and len(trace) <= TRACEPARENT_MAX:  # parsed (or refused) by the tracer
            record.trace = trace
        return record


def candle_payload(encoded: bytes) -> str:
    """The JSON of a candle event's SSE message (what follows `data: `)."""
    return encoded.decode().partition("\ndata: ")[2].removesuffix("\n\n")


def _as_candle_event(record: PriceRecord, data: dict) -> None:
    """A candle event from Redis: its payload (one line of JSON) and where it sits (interval in
    `source`, open time in `event_time`); ValueError when it is not one."""
    payload, interval, opened = data.get("candle"), data.get("source"), data.get("event_time")
    if not isinstance(payload, str) or "\n" in payload or "\r" in payload or type(opened) is not int:
        raise ValueError("malformed candle event")
    parsed = parse_event_id(data.get("id"))
    if parsed is None:
        raise ValueError("a candle event without an id")
    record.kind, record.source, record.event_time = CANDLE, str(interval), opened
    record.encoded = f"id: {parsed[0]}-{parsed[1]}\nevent: candle\ndata: {payload}\n\n".encode()


def parse_event_id(value: object) -> tuple[str, int] | None:
    """(epoch, seq) of an event id, or None when it is not one (garbage, foreign, empty)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    epoch, _, seq = value.rpartition("-")
    if not epoch or not seq.isdigit() or not seq.isascii():
        return None
    return epoch, int(seq)


def new_epoch() -> str:
    """A fresh random epoch: ten hex digits."""
    return secrets.token_hex(5)


_EMPTY = PriceRecord("", 0.0)


def merge(old: PriceRecord | None, update: PriceUpdate, received_at: float, source: str) -> PriceRecord:
    """The record after `update`; an older price never overwrites a newer one."""
    o = _EMPTY if old is None else old
    if update.kind == BOOK_TICKER and update.bid is not None:
        return _with_quote(o, update, received_at, source)
    u = update
    new = PriceRecord(u.symbol, received_at, source)
    # Spelled out field by field: this runs for every frame (see bench/streaming).
    when = u.event_time
    if u.price is not None and (o.price_time is None or when is None or when >= o.price_time):
        new.price, new.price_time = u.price, when
    else:
        new.price, new.price_time = o.price, o.price_time
    _merge_quote(new, o, u, received_at)
    new.open_24h = o.open_24h if u.open_24h is None else u.open_24h
    new.high_24h = o.high_24h if u.high_24h is None else u.high_24h
    new.low_24h = o.low_24h if u.low_24h is None else u.low_24h
    new.volume_24h = o.volume_24h if u.volume_24h is None else u.volume_24h
    pct = u.change_24h_percent
    new.change_24h_percent = o.change_24h_percent if pct is None else pct
    new.event_time = o.event_time if when is None else when
    return new


def _with_quote(o: PriceRecord, u: PriceUpdate, received_at: float, source: str) -> PriceRecord:
    """`o` with a bookTicker's quote (the caller dropped it if older by `u`)."""
    return _quote_record(o, u.symbol, received_at, source, (u.bid, u.bid_qty, u.ask, u.ask_qty), u.update_id)


def _quote_record(
    o: PriceRecord,
    symbol: str,
    received_at: float,
    source: str,
    quote: tuple[Decimal | str | None, ...],
    update_id: int | None,
    epoch: str = "",
    seq: int = 0,
    pos: int = 0,
) -> PriceRecord:
    """`o` with a quote (bid, bid qty, ask, ask qty), numbered `epoch`-`seq` at ring `pos`.

    One positional call in the fields' declared order: a keyword call costs three times as
    much, and the fast path makes one for every bookTicker (bench/streaming).
    """
    bid, bid_qty, ask, ask_qty = quote
    return PriceRecord(
        symbol,
        received_at,
        source,
        o.price,
        bid,
        bid_qty,
        ask,
        ask_qty,
        o.open_24h,
        o.high_24h,
        o.low_24h,
        o.volume_24h,
        o.change_24h_percent,
        o.event_time,
        o.price_time,
        QUOTE,
        update_id,
        received_at,
        epoch,
        seq,
        pos,
    )


def _merge_quote(new: PriceRecord, o: PriceRecord, u: PriceUpdate, received_at: float) -> None:
    """Best bid/ask: a bookTicker's quote (the caller dropped it if older by `u`), else a
    24 h ticker's bid/ask, but only while no bookTicker quote was ever received."""
    if u.bid is not None and (u.kind == BOOK_TICKER or o.quote_id is None):
        new.bid, new.bid_qty, new.ask, new.ask_qty = u.bid, u.bid_qty, u.ask, u.ask_qty
        new.quote_at = received_at
        if u.kind == BOOK_TICKER:
            new.kind, new.quote_id = QUOTE, u.update_id
        return
    new._bid, new._bid_qty, new._ask, new._ask_qty = o._bid, o._bid_qty, o._ask, o._ask_qty
    new.quote_id, new.quote_at = o.quote_id, o.quote_at


def older_quote(current: PriceRecord | None, update_id: int | None) -> bool:
    """True when a bookTicker with `update_id` is not newer than the quote `current` holds."""
    return current is not None and current.quote_id is not None and (update_id or 0) <= current.quote_id


class PriceBook:
    """Latest record per tracked symbol plus a bounded, numbered ring of every update.

    Readers of the ring (SSE streams) keep a cursor (a ring position); one that falls more
    than `ring_size` updates behind is told so and resynchronises from the snapshot. A
    reconnecting SSE client names its last event id: `resume` finds it in the ring.
    """

    def __init__(self, symbols: Iterable[str], ring_size: int = 65536) -> None:
        self.symbols = tuple(symbols)
        self._tracked = frozenset(self.symbols)
        self._records: dict[str, PriceRecord] = {}
        self._ring: deque[PriceRecord] = deque(maxlen=ring_size)
        self._index: dict[tuple[str, int], int] = {}  # event id -> ring position, for resume
        self._seq = 0  # ring position of the newest update
        self._floor = 0  # resuming from a position below this could miss events (a gap)
        self.epoch = new_epoch()
        self._made = 0  # records made here: the `seq` of their event ids
        lock = self._lock = threading.Lock()
        self._cond = threading.Condition(lock)  # any update
        self._waiting = 0
        # Waiters for one event type wake only for it: a `price` stream is not woken by the
        # hundreds of bookTicker quotes a second it does not want.
        self._kind_cond = {kind: threading.Condition(lock) for kind in (PRICE, QUOTE, CANDLE)}
        self._kind_seq = dict.fromkeys((PRICE, QUOTE, CANDLE), 0)  # ring position of each type's newest
        self._kind_waiting = dict.fromkeys((PRICE, QUOTE, CANDLE), 0)
        self._candle_seq = 0  # candle events are numbered apart: Redis followers count price seqs
        # The latest event of the newest CANDLE_SNAPSHOT candles per (symbol, interval), by open
        # time: what a snapshot sends a stream that asked for candles.
        self._candles: dict[tuple[str, str], dict[int, PriceRecord]] = {}
        self._closed = False
        self.stale_quotes = 0  # bookTicker updates dropped: not newer (by `u`) than the quote held
        # Called (under the book's lock, so in order) with every record made here rather
        # than received from Redis: the Redis publisher's feed while this process leads.
        self.sink: Callable[[PriceRecord], None] | None = None

    @property
    def seq(self) -> int:
        """Ring position of the newest update (0 before the first)."""
        return self._seq

    def new_epoch(self) -> None:
        """Number this process's records afresh (call in each serving process, after fork)."""
        with self._cond:
            self.epoch, self._made = new_epoch(), 0

    def get(self, symbol: str) -> PriceRecord | None:
        """The latest record of `symbol`, or None."""
        return self._records.get(symbol)

    def snapshot(self) -> dict[str, PriceRecord]:
        """Every symbol's latest record."""
        return dict(self._records)

    def apply(
        self,
        update: PriceUpdate,
        received_at: float | None = None,
        source: str = "websocket",
        trace: str | None = None,
    ) -> PriceRecord | None:
        """Merge one update (`trace`: its frame's traceparent, when sampled); None when its symbol
        is not tracked, a publisher already sent it, or it is an older quote."""
        if update.symbol not in self._tracked:
            return None
        if received_at is None:
            received_at = time.time()
        with self._lock:  # the conditions' lock, taken without their Python-level wrappers
            current = self._records.get(update.symbol)
            if current is not None and not self._news(current, update):
                return None
            record = merge(current, update, received_at, source)
            record.trace = trace
            self._publish(record, True)
        return record

    def apply_quote(
        self, symbol: str, update_id: int, quote: tuple[str, str, str, str], received_at: float
    ) -> PriceRecord | None:
        """`apply` of a bookTicker from `parser.fast_quote` (its bid, bid qty, ask, ask qty as
        validated text), with the same outcome: None when the symbol is not tracked or the
        quote is not newer by `u` than the one held."""
        if symbol not in self._tracked:
            return None
        with self._lock:
            o = self._records.get(symbol)
            if o is None:
                o = _EMPTY
            else:  # a bookTicker has no event time: only `u` decides (see `_news`)
                held = o.quote_id
                if held is not None and update_id <= held:
                    self.stale_quotes += 1
                    return None
            made = self._made = self._made + 1
            seq = self._seq = self._seq + 1
            # `_with_quote`, numbered as `_publish` numbers it
            record = _quote_record(o, symbol, received_at, "websocket", quote, update_id, self.epoch, made, seq)
            self._enter(record, True)
        return record

    def _news(self, current: PriceRecord, update: PriceUpdate) -> bool:
        """Whether `update` may change `current`: a quote newer by `u`, and no event that the
        record of a publisher (before a handover) has already."""
        if update.kind == BOOK_TICKER and older_quote(current, update.update_id):
            self.stale_quotes += 1  # ordered by `u`: whichever line or publisher sent it
            return False
        return current.epoch == self.epoch or _newer(update.event_time, current)

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
        """Store a complete record from Redis unless the book has it or a newer one.

        Newer is the exchange's order, never a host's clock: within one publisher's epoch the
        sequence number, across epochs (a new leader, this worker's own solo records) the
        exchange event time, so the same update under two ids is stored once and a price
        never goes back. Refusing an older one means this ring now differs from what the
        publisher's subscribers saw, so a client naming an earlier id gets the snapshot.
        """
        if record.symbol not in self._tracked:
            return False
        if record.kind is CANDLE:
            return self._put_candle(record)
        with self._cond:
            current = self._records.get(record.symbol)
            if current is not None:
                if current.seq == record.seq and current.epoch == record.epoch:
                    return False
                if not _follows(record, current) or _quote_went_back(current, record):
                    self._floor = self._seq + 1
                    return False
                _keep_newer_quote(current, record)
            self._publish(record, local=False)
        return True

    def add_event(self, symbol: str, payload: str, interval: str, open_time: int) -> str:
        """Put a candle event (`payload`: its JSON) in the ring, for SSE; returns its id
        `<epoch>c-<n>`. Made here, so a leader's sink publishes it with the prices, in ring order:
        every worker then holds it under this id, between the same price events."""
        record = PriceRecord(symbol, time.time(), interval)  # a candle event: `source` is its interval
        record.kind, record.event_time = CANDLE, open_time
        with self._cond:
            self._candle_seq += 1
            record.epoch, record.seq = f"{self.epoch}c", self._candle_seq
            record.encoded = f"id: {record.event_id}\nevent: candle\ndata: {payload}\n\n".encode()
            self._publish(record, local=True)
            self._keep_candle(record)
        return record.event_id

    def _put_candle(self, record: PriceRecord) -> bool:
        """A candle event from Redis, under its publisher's id, unless the ring has it already."""
        with self._cond:
            if (record.epoch, record.seq) in self._index:
                return False
            self._publish(record, local=False)
            self._keep_candle(record)
        return True

    def _keep_candle(self, record: PriceRecord) -> None:
        held = self._candles.setdefault((record.symbol, record.source), {})
        held[record.event_time or 0] = record
        while len(held) > CANDLE_SNAPSHOT:
            del held[min(held)]

    def mark_gap(self) -> None:
        """Updates may have been missed before the next one: resume no earlier than it."""
        with self._cond:
            self._floor = self._seq + 1

    def _publish(self, record: PriceRecord, local: bool) -> None:
        if not record.epoch:  # made here (or read from Redis written by a version without ids)
            self._made += 1
            record.epoch, record.seq = self.epoch, self._made
        record.pos = self._seq = self._seq + 1
        self._enter(record, local)

    def _enter(self, record: PriceRecord, local: bool) -> None:
        """Put a numbered record (`pos` set) in the book, the ring and the index; wake its waiters."""
        seq = record.pos
        if record.kind is not CANDLE:
            self._records[record.symbol] = record
        ring, index = self._ring, self._index
        if len(ring) == ring.maxlen:  # the oldest leaves the ring: and the index
            oldest = ring[0]
            index.pop((oldest.epoch, oldest.seq), None)
        ring.append(record)
        index[record.epoch, record.seq] = seq
        if self._waiting:
            self._cond.notify_all()
        kind = record.kind
        self._kind_seq[kind] = seq
        if self._kind_waiting[kind]:
            self._kind_cond[kind].notify_all()
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
        newest.reverse()
        return self._seq, newest, lost

    def wait_since(
        self, cursor: int, timeout: float, kinds: frozenset[str] | None = None
    ) -> tuple[int, list[PriceRecord], bool]:
        """Like `since`, but first block up to `timeout` for an update (or the book closing);
        with `kinds` naming one event type, for an update of that type.

        One lock round trip per wake-up: with hundreds of SSE streams woken at once, the
        lock is what they queue for.
        """
        if kinds is not None and len(kinds) == 1:
            return self._wait_kind(cursor, timeout, next(iter(kinds)))
        with self._cond:
            if self._seq <= cursor and not self._closed:
                self._waiting += 1
                try:
                    self._cond.wait_for(lambda: self._seq > cursor or self._closed, timeout)
                finally:
                    self._waiting -= 1
            return self._since(cursor)

    def _wait_kind(self, cursor: int, timeout: float, kind: str) -> tuple[int, list[PriceRecord], bool]:
        cond, seqs = self._kind_cond[kind], self._kind_seq
        with cond:
            if seqs[kind] <= cursor and not self._closed:
                self._kind_waiting[kind] += 1
                try:
                    cond.wait_for(lambda: seqs[kind] > cursor or self._closed, timeout)
                finally:
                    self._kind_waiting[kind] -= 1
            return self._since(cursor)

    def ordered_snapshot(self) -> tuple[int, list[PriceRecord]]:
        """(cursor, every symbol's latest record and the latest events of its newest candles,
        oldest first): the last is the newest update."""
        with self._cond:
            candles = [r for held in self._candles.values() for r in held.values()]
            return self._seq, sorted([*self._records.values(), *candles], key=_position)

    def resume(self, last_id: str | None) -> tuple[int, list[PriceRecord]]:
        """Where a stream that last saw `last_id` continues: (cursor, records to send first).

        No id: live updates only. An id found in the ring past any gap: the cursor right
        after it, nothing first (the ring replays the rest). Any other id (older than the
        ring, before a gap, another process's solo updates, garbage): the snapshot.
        """
        if last_id is None:
            return self._seq, []
        wanted = parse_event_id(last_id)
        if wanted is not None:
            position = self._find(*wanted)
            if position is not None:
                return position, []
        return self.ordered_snapshot()

    def _find(self, epoch: str, seq: int) -> int | None:
        """The ring position of event `<epoch>-<seq>` if the ring holds it past any gap."""
        with self._cond:
            position = self._index.get((epoch, seq))
            return position if position is not None and position >= self._floor else None

    def id_at(self, cursor: int) -> str | None:
        """The event id at ring position `cursor`, None when it left the ring or never was."""
        with self._cond:
            back = self._seq - cursor
            if cursor <= 0 or back < 0 or back >= len(self._ring):
                return None
            return self._ring[-1 - back].event_id

    def close(self) -> None:
        """Wake every waiter for good (shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for cond in self._kind_cond.values():
                cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once the book was closed for shutdown."""
        return self._closed


def _newer(event_time: int | None, current: PriceRecord) -> bool:
    """Whether an event at `event_time` is past `current`; unknown times cannot be ordered, so yes."""
    return event_time is None or current.event_time is None or event_time > current.event_time


def _follows(record: PriceRecord, current: PriceRecord) -> bool:
    """Whether `record` comes after `current` in the exchange's order (see `PriceBook.put`)."""
    if record.epoch == current.epoch:
        return record.seq > current.seq
    return _newer(record.event_time, current)


def _quote_went_back(current: PriceRecord, record: PriceRecord) -> bool:
    """A published quote older by `u` than the one held: never served over the newer one."""
    return record.kind == QUOTE and older_quote(current, record.quote_id)


def _keep_newer_quote(current: PriceRecord, record: PriceRecord) -> None:
    """A trade record carrying an older quote (another publisher's) takes the newer one held."""
    if current.quote_id is not None and (record.quote_id is None or record.quote_id < current.quote_id):
        record._bid, record._bid_qty, record._ask, record._ask_qty = (
            current._bid,
            current._bid_qty,
            current._ask,
            current._ask_qty,
        )
        record.quote_id, record.quote_at = current.quote_id, current.quote_at


def _position(record: PriceRecord) -> int:
    return record.pos
