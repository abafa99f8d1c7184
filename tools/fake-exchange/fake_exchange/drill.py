"""Fault drills against a running service: numbered trades in, /price samples and SSE events out.

    trades = NumberedTrades(fake).start()
    sampler = PriceSampler(base_url, "BTCUSDT").start()
    events = SseReader(base_url).start()
    fake.fault("drop", only=0)
    ...
    trades.stop(); events.wait_for(trades.sent); sampler.stop()

Every trade has its own event time, so an SSE event names the update it carries by
(symbol, event_time) whatever else the event's framing holds.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlsplit

import requests

from .market import trade_event
from .server import FakeExchange
from .trades import AggTrade

Update = tuple[str, int]  # (symbol, event time in ms)


class Paced:
    """Calls `step` `rate` times a second in a background thread, from `start` to `stop`."""

    def __init__(self, rate: float, name: str) -> None:
        self.period = 1 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)

    def start(self) -> Self:
        """Start stepping in the background."""
        self._thread.start()
        return self

    def _halt(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.step()
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def step(self) -> None:
        """One step of the loop."""
        raise NotImplementedError


class NumberedTrades(Paced):
    """Sends `rate` trades per second, round-robin over `symbols`, each with a new id and event time."""

    def __init__(
        self, fake: FakeExchange, symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT"), rate: float = 100.0
    ) -> None:
        super().__init__(rate, "numbered-trades")
        self.fake = fake
        self.symbols = tuple(symbols)
        self.sent: list[Update] = []
        self._first_ms = int(time.time() * 1000)

    def stop(self) -> list[Update]:
        """Stop sending; returns every update sent."""
        self._halt()
        return self.sent

    def step(self) -> None:
        """Send the next trade."""
        n = len(self.sent)
        symbol = self.symbols[n % len(self.symbols)]
        when = self._first_ms + n  # strictly increasing: one event time per update
        self.fake.send(trade_event(symbol, f"{1000 + n}.5", n, now_ms=when), stream=f"{symbol.lower()}@trade")
        self.sent.append((symbol, when))


class TradeFlow(Paced):
    """Makes `rate` aggregate trades per second, round-robin over `symbols`, whether or not
    anyone listens: each is recorded by the exchange, then sent as an `aggTrade` event to the
    connections subscribed to its stream. Trades go on while the service is cut off, so a
    reconnect leaves a hole in the ids that only the REST API can fill."""

    def __init__(
        self, fake: FakeExchange, symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT"), rate: float = 50.0
    ) -> None:
        super().__init__(rate, "trade-flow")
        self.fake = fake
        self.symbols = tuple(symbols)
        self.made = 0

    def stop(self) -> None:
        """Stop trading."""
        self._halt()

    def step(self) -> None:
        """Make the next trade (on the exchange's loop: recorded and sent in id order)."""
        symbol = self.symbols[self.made % len(self.symbols)]
        self.made += 1
        self.fake.call(lambda: self._trade(symbol))

    def _trade(self, symbol: str) -> AggTrade:
        fake = self.fake
        trade = fake.market.step(symbol)
        stream = f"{symbol.lower()}@aggTrade"
        muted = fake._muted.get(stream, set())
        listening = [c for c in fake._listening() if stream in c.streams and c.conn not in muted]
        fake._send_payload(stream, trade.event(), listening)
        return trade


@dataclass(frozen=True)
class Sample:
    """One /price answer: when it was asked (monotonic), its status, the price's age and
    when the service received that price (epoch ms; None unless 200)."""

    at: float
    status: int
    age_seconds: float | None
    received_at: float | None = None


class PriceSampler(Paced):
    """Reads `/price/<symbol>` every `interval` seconds from a thread."""

    def __init__(self, base_url: str, symbol: str = "BTCUSDT", interval: float = 0.1) -> None:
        super().__init__(1 / interval, "price-sampler")
        self.url = f"{base_url}/price/{symbol}"
        self.samples: list[Sample] = []
        self._session = requests.Session()

    def stop(self) -> list[Sample]:
        """Stop sampling; returns every sample."""
        self._halt()
        return self.samples

    def step(self) -> None:
        """Ask for the price once."""
        at = time.monotonic()
        try:
            answer = self._session.get(self.url, timeout=2)
        except requests.RequestException:
            self.samples.append(Sample(at, 0, None))
            return
        body = answer.json() if answer.status_code == 200 else {}
        self.samples.append(Sample(at, answer.status_code, body.get("age_seconds"), body.get("received_at")))

    def stale(self, limit: float = 1.0, after: float = 0.0) -> list[Sample]:
        """Samples taken after `after` that were not a 200 with a price younger than `limit`."""
        return [s for s in self.samples if s.at >= after and (s.status != 200 or (s.age_seconds or 0) >= limit)]


class SseReader:
    """Reads `/stream` in a thread; keeps (symbol, event_time) of every `data:` line.

    Plain HTTP/1.0 on a socket: the body is not chunked and every line is read as soon
    as it arrives (an HTTP client's read buffer would hold the last events back).
    """

    def __init__(self, base_url: str, query: str = "") -> None:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self._sock = socket.create_connection((host, port), timeout=10)
        self._sock.sendall(f"GET /stream{query} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        self._body = self._sock.makefile("rb")
        status = self._body.readline().split()
        if len(status) < 2 or status[1] != b"200":
            raise ConnectionError(f"/stream answered {b' '.join(status).decode()}")
        while self._body.readline().strip():  # the headers: the subscription is open
            pass
        self._sock.settimeout(None)
        self.received: list[Update] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name="sse-reader")

    def start(self) -> SseReader:
        """Start reading in the background."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for line in self._body:
                if line.startswith(b"data:"):
                    event = json.loads(line.removeprefix(b"data:"))
                    self.received.append((event["symbol"], event["event_time"]))
        except (OSError, ValueError):
            return  # closed by `close()`

    def wait_for(self, sent: list[Update], timeout: float = 10.0) -> list[Update]:
        """Wait until the last update sent arrived (or `timeout`), then close; returns what came."""
        deadline = time.monotonic() + timeout
        while sent and sent[-1] not in self.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything repeated after the last one
        self.close()
        return list(self.received)

    def close(self) -> None:
        """End the subscription."""
        with contextlib.suppress(OSError):  # already gone
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._thread.is_alive():
            self._thread.join(2)
