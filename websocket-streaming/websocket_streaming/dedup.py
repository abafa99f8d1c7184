"""One copy of each update, whichever connection delivers it first.

Two connections deliver the same updates while a rotation overlaps, and all the time with
the A/B feeds of `WS_CONNECTIONS=2`. An update's identity is its stream and its trade id
(`trade`), aggregate id (`aggTrade`) or book update id (`bookTicker`), or its event time
for the ticker kinds (`24hrTicker`, `24hrMiniTicker`, `kline`), which carry no id of their own.
`UpdateFilter` decides by identity; `TwinFrames` only spares the parse of a frame the other
connection already delivered byte for byte.
"""

from __future__ import annotations

from collections import deque

from .parser import AGG_TRADE, BOOK_TICKER, KLINE, MINI_TICKER, TICKER, TRADE, PriceUpdate

EVENT_KINDS = frozenset({TRADE, AGG_TRADE})  # each one happened; an older one is still news
TIME_KEYED_KINDS = frozenset({MINI_TICKER, TICKER, KLINE})
MAX_TRACKED_STREAMS = 4096  # a feed naming ever new streams must not grow memory without end


class _Stream:
    """What one stream (of one symbol) delivered: the newest identity, recent event ids."""

    __slots__ = ("high", "order", "seen")

    def __init__(self, events: bool) -> None:
        self.high = -1
        self.seen: set[int] | None = set() if events else None
        self.order: deque[int] = deque()


class UpdateFilter:
    """Admits each update once, by identity; not thread-safe (the caller holds a lock).

    Per stream and symbol, the newest identity applied so far decides:
    - newer: admitted;
    - the same: its twin from the other connection, dropped;
    - older, for the ticker kinds and bookTicker (states, each replacing the last): a
      state older than the one applied, dropped, so bid, ask and the 24 h figures never
      go back;
    - older, for trades (events): admitted once if no connection delivered it yet (a
      connection opened later than the other is ahead of it for a moment), dropped if one
      did. The book keeps the newer price either way.
    """

    def __init__(self, window: int = 8192) -> None:
        self.window = window  # event ids remembered per stream to recognise late twins
        self.duplicates = 0  # dropped: a twin, or a state older than the one applied
        self.late = 0  # admitted although a newer event of its stream came first
        self._streams: dict[tuple[str, str], _Stream] = {}

    def admit(self, stream: str | None, update: PriceUpdate) -> bool:
        """True when `update` is news: apply and publish it; False for a duplicate."""
        kind = update.kind
        # the number that tells one update of a stream from another (None: cannot tell)
        ident = update.event_time if kind in TIME_KEYED_KINDS else update.update_id
        if ident is None:
            return True
        return self._admit(stream or kind, update.symbol, kind, ident)

    def admit_quote(self, stream: str, symbol: str, update_id: int) -> bool:
        """`admit` of a bookTicker from `parser.fast_quote` on `stream`."""
        state = self._streams.get((stream, symbol))
        if state is not None and update_id > state.high:  # the usual case: the next quote
            state.high = update_id
            return True
        return self._admit(stream, symbol, BOOK_TICKER, update_id)

    def _admit(self, stream: str, symbol: str, kind: str, ident: int) -> bool:
        state = self._streams.get((stream, symbol))
        if state is None:
            state = self._track(stream, symbol, kind)
            if state is None:
                return True
        seen = state.seen
        if ident > state.high:
            state.high = ident
        elif ident == state.high or seen is None or ident in seen:
            self.duplicates += 1
            return False
        else:
            self.late += 1
        if seen is not None:
            seen.add(ident)
            state.order.append(ident)
            if len(state.order) > self.window:
                seen.discard(state.order.popleft())
        return True

    def _track(self, stream: str, symbol: str, kind: str) -> _Stream | None:
        if len(self._streams) >= MAX_TRACKED_STREAMS:
            return None
        state = self._streams[(stream, symbol)] = _Stream(kind in EVENT_KINDS)
        return state


class TwinFrames:
    """Frames handled so far, byte for byte, with the connection that delivered them.

    With two live connections, every frame arrives twice; the second copy is recognised
    here before it is parsed (parsing is most of a frame's cost). An optimisation only:
    `UpdateFilter` alone guarantees one copy of each update. A frame is remembered until
    its twin arrives or `window` newer frames push it out. Not thread-safe.
    """

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self.skipped = 0
        self._first: dict[bytes, tuple[int, str]] = {}
        self._order: deque[bytes] = deque()

    def twin_of(self, data: bytes, connection: int) -> str | None:
        """The kind of `data` if another connection delivered the same frame (then forgotten)."""
        first = self._first.get(data)
        if first is None or first[0] == connection:
            return None
        del self._first[data]
        self.skipped += 1
        return first[1]

    def remember(self, data: bytes, connection: int, kind: str) -> None:
        """Note that `connection` delivered `data`, a frame of `kind`."""
        self._first[data] = (connection, kind)
        self._order.append(data)
        if len(self._order) > self.window:
            self._first.pop(self._order.popleft(), None)
