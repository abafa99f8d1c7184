"""The upstream WebSocket: combined-stream connections kept alive whatever happens.

`WS_CONNECTIONS` lines (1, or 2 for an A and a B feed) each keep one live connection to
the same streams. Threads: one supervisor (connect, backoff, watchdog, rotation) and one
reader per open connection. Readers hand every text frame to the frame handler directly
(no queue, so nothing can fill up and drop; the handler drops the twins two connections
deliver); the supervisor learns about opens, closes and first messages through an
unbounded event queue.

Pacing: a connection that delivered and then went away is replaced at once (a jitter of
at most `reconnect_jitter`); only consecutive *failed* attempts back off exponentially: a
refused or failed handshake (HTTP 429/418 with their `Retry-After` honoured), a connection
closed before its first message, a close 1008. Every attempt counts against Binance's
budget of 300 per 5 minutes.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

from shared import tracing

from .backoff import AttemptWindow
from .binance.connection import Connection
from .binance.errors import POLICY_VIOLATION, Ended
from .binance.lines import Line
from .binance.streams import host_of, stream_count
from .parser import SERVER_SHUTDOWN
from .stats import IngestStats

log = logging.getLogger("websocket_streaming.upstream")

FrameHandler = Callable[[bytes, float, int | None], str | None]  # (frame, received at, connection)
Reporter = Callable[[BaseException, dict[str, Any]], None]


@dataclass(frozen=True)
class UpstreamSettings:
    """Timings of the connection manager (seconds)."""

    stale_after: float = 10.0
    max_age: float = 23.5 * 3600
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_reset_after: float = 60.0
    attempt_limit: int = 300
    attempt_window: float = 300.0
    overlap: float = 1.0
    connect_timeout: float = 10.0
    tick: float = 0.05
    connections: int = 1
    reconnect_jitter: float = 0.25
    stagger: float = 1.0  # line B opens this long after line A first delivered


class UpstreamManager:
    """Keeps each line's combined-stream connection live: backoff, watchdog, make-before-break."""

    def __init__(
        self,
        url: str,
        handler: FrameHandler,
        stats: IngestStats,
        settings: UpstreamSettings | None = None,
        on_gap: Callable[[], None] | None = None,
        report_error: Reporter | None = None,
    ) -> None:
        self.url = url
        self.host = host_of(url)
        self.stream_count = stream_count(url)
        self.handler = handler
        self.stats = stats
        self.settings = settings or UpstreamSettings()
        self.on_gap = on_gap
        self.report_error = report_error
        self.window = AttemptWindow(self.settings.attempt_limit, self.settings.attempt_window)
        self.lines = [Line(i, self.settings) for i in range(max(1, self.settings.connections))]
        self._events: queue.SimpleQueue[tuple[str, Connection | None, Any]] = queue.SimpleQueue()
        self._ids = count(1)
        self._gap_pending = True
        self._open = 0  # connections open now; above 1, the handler looks for twin frames
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the supervisor thread."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="ws-supervisor")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and stop; returns within about `timeout` seconds."""
        self._stopping.set()
        self._events.put(("stop", None, None))  # the supervisor sees the stop now, not a tick later
        if self._thread is not None:
            self._thread.join(timeout)
        for conn in self._connections():
            conn.close()
        for conn in self._connections():
            conn.thread.join(max(0.1, timeout / 4))
        for line in self.lines:
            line.active = line.candidate = None
            line.draining.clear()
        self.stats.connected = False

    @property
    def alive(self) -> bool:
        """True while the supervisor thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _connections(self) -> list[Connection]:
        return [conn for line in self.lines for conn in line.connections()]

    @property
    def open_connections(self) -> int:
        """How many of this manager's connections are open now (rotation overlap included)."""
        return self._open

    def delivering(self) -> int:
        """How many lines have a live connection that delivered at least one frame."""
        return sum(1 for line in self.lines if line.active is not None and line.active.messages > 0)

    def status(self) -> dict[str, Any]:
        """Host, each line's state and the last error, for /health (never credentials)."""
        now = time.monotonic()
        failed = [line for line in self.lines if line.last_error_at is not None]
        latest = max(failed, key=lambda line: line.last_error_at or 0.0, default=None)
        error = None if latest is None else latest.last_error
        return {
            "host": self.host,
            "streams": self.stream_count,
            "lines": [line.status(now) for line in self.lines],
            "last_error": None if error is None else error.text,
            "last_error_age_seconds": None
            if latest is None or latest.last_error_at is None
            else round(time.time() - latest.last_error_at, 3),
            "unresolved": error is not None and error.unresolved,
        }

    def rotate(self) -> None:
        """Replace every line's connection, make-before-break (heals a silent stream)."""
        self._events.put(("rotate", None, None))

    def use_lines(self, count: int) -> None:
        """Keep `count` lines from now on (a solo worker in a Redis outage holds one)."""
        self._events.put(("lines", None, max(1, count)))

    # ---- called from reader threads --------------------------------------------------
    def post(self, kind: str, conn: Connection, detail: Any) -> None:
        """Tell the supervisor something happened to `conn`."""
        self._events.put((kind, conn, detail))

    def deliver(self, conn: Connection, data: bytes) -> None:
        """Hand one frame to the handler; never raises."""
        received_at = time.time()
        self.stats.last_message_at = received_at
        if conn.messages == 1:
            self.post("first", conn, None)
        try:
            kind = self.handler(data, received_at, conn.id if self._open > 1 else None)
        except Exception as exc:
            self._failed("frame handler failed", exc, conn)
            return
        if kind == SERVER_SHUTDOWN:
            self.post("shutdown", conn, None)

    def _failed(self, what: str, exc: BaseException, conn: Connection | None = None) -> None:
        self.stats.handler_errors += 1
        log.error("%s: %r", what, exc, exc_info=exc)
        if self.report_error is not None:
            try:
                self.report_error(exc, {"connection": conn.id if conn else None, "what": what})
            except Exception:
                log.exception("error reporter failed")

    # ---- the supervisor --------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:  # lines first: the first connection opens at start, not a tick later
                now = time.monotonic()
                for line in self.lines:
                    self._check(line, now)
                self._drain_events()
            except Exception as exc:
                self._failed("upstream supervisor error", exc)
                time.sleep(self.settings.tick)

    def _drain_events(self) -> None:
        try:
            kind, conn, detail = self._events.get(timeout=self.settings.tick)
        except queue.Empty:
            return
        while True:
            getattr(self, f"_on_{kind}")(conn, detail)
            try:
                kind, conn, detail = self._events.get_nowait()
            except queue.Empty:
                return

    def _check(self, line: Line, now: float) -> None:
        idle = line.active is None and line.candidate is None
        if (idle or self._rotation_due(line, now)) and now >= line.next_attempt:
            self._connect(line, now)
        if line.active is not None:
            self._watchdog(line, line.active, now)
        self._check_candidate(line, now)
        self._close_drained(line, now)
        self._maybe_reset_backoff(line, now)

    def _close_drained(self, line: Line, now: float) -> None:
        """The overlap is over: close the old connection, whether or not the server does."""
        for conn, until in list(line.draining.items()):
            if now >= until and not conn.closing:
                conn.close()

    def _maybe_reset_backoff(self, line: Line, now: float) -> None:
        active = line.active
        long_up = active is not None and active.age(now) >= self.settings.backoff_reset_after
        if line.backoff.failures and long_up:
            line.backoff.reset()

    def _rotation_due(self, line: Line, now: float) -> bool:
        """Time for make-before-break: after serverShutdown, or at the maximum age."""
        active = line.active
        if active is None or line.candidate is not None:
            return False
        return line.rotate_soon or active.age(now) >= line.max_age

    def _connect(self, line: Line, now: float) -> None:
        wait = self.window.wait_time()
        if wait > 0:
            log.warning("connection attempt budget used up; next attempt in %.1f s", wait)
            line.next_attempt = now + wait
            return
        self.window.record()
        self.stats.connection_attempts += 1
        if line.active is None and line.attempted:
            self.stats.reconnects += 1
        line.attempted = True
        line.candidate = Connection(next(self._ids), self.url, self, line)
        log.info("connecting upstream (connection %s, line %s)", line.candidate.id, line.name)
        line.candidate.span = self._connect_span(line, line.candidate)
        line.candidate.start()

    def _connect_span(self, line: Line, conn: Connection) -> tracing.Span:
        """A span from an attempt to its first frame; why it was made is its first event."""
        attributes: dict[str, str | int] = {"binance.line": line.name, "binance.connection": conn.id}
        attributes["server.address"] = self.host
        span = tracing.start_span("binance connect", kind="client", attributes=attributes)
        if line.active is not None:
            span.add_event("rotation", {"reason": "serverShutdown" if line.rotate_soon else "maximum age"})
        elif line.last_error is not None:
            span.add_event("reconnect", {"reason": line.last_error.text})
        else:
            span.add_event("connect", {"reason": "start"})
        return span

    def _watchdog(self, line: Line, active: Connection, now: float) -> None:
        if active.last_message_at is None:
            return
        silent = now - active.last_message_at
        if silent > self.settings.stale_after:
            log.warning("connection %s silent for %.1f s: replacing it", active.id, silent)
            self.stats.watchdog_reconnects += 1
            self._lose(line, active, now, Ended(f"silent for {silent:.1f} s"))

    def _check_candidate(self, line: Line, now: float) -> None:
        cand = line.candidate
        if cand is None or line.active is None or cand.opened_at is None:
            return
        if now - cand.opened_at > self.settings.stale_after:
            log.warning("new connection %s delivered nothing: giving up on it", cand.id)
            line.candidate = None
            cand.close()
            self._retry(line, now, Ended("new connection delivered nothing"), failed=True)

    def _retry(self, line: Line, now: float, ended: Ended, failed: bool) -> float:
        """Schedule the line's next attempt; returns the delay.

        A failed attempt grows the backoff (and waits out a Retry-After); losing a
        connection that delivered resets it and reconnects at once, spaced out only when
        half the attempt budget is gone.
        """
        if failed:
            delay = max(line.backoff.next_delay(), ended.retry_after)
        else:
            line.backoff.reset()
            delay = max(random.uniform(0.0, self.settings.reconnect_jitter), self.window.spacing())
        line.next_attempt = now + delay
        line.failed(ended)
        return delay

    def _lose(self, line: Line, conn: Connection, now: float, ended: Ended) -> None:
        """The line's live connection is gone: reconnect (at once if it delivered)."""
        if conn is line.active:
            line.active = None
            failed = conn.messages == 0 or ended.code == POLICY_VIOLATION
            delay = self._retry(line, now, ended, failed)
            log.warning("upstream connection %s lost (%s); retry in %.2f s", conn.id, ended.text, delay)
            if self.delivering() == 0:
                self._gap_pending = True
            cand = line.candidate
            if cand is not None and cand.opened_at is not None:
                self._promote(line, cand)  # lost mid-rotation: the new connection is already open
            self._update_connected()
        conn.close()

    def _update_connected(self) -> None:
        self.stats.connected = any(line.active is not None for line in self.lines)

    # ---- supervisor event handlers ---------------------------------------------------
    def _on_opened(self, conn: Connection, _detail: object) -> None:
        self._open += 1
        conn.span.add_event("opened")
        line = conn.line
        if conn is not line.candidate:
            conn.close()
            return
        if line.active is None:
            self._promote(line, conn)
        self._update_connected()

    def _on_first(self, conn: Connection, _detail: object) -> None:
        line = conn.line
        if conn is line.candidate and line.active is not None:
            conn.span.add_event("switched", {"replaced_connection": line.active.id})
        conn.span.add_event("delivering")
        conn.span.end()
        log.info(
            "upstream connection %s delivering (line %s, %d streams)", conn.id, line.name, self.stream_count
        )
        if not line.delivered_once:
            line.delivered_once = True
            self._open_next_line(line)
        if conn is not line.candidate:
            return
        if line.active is not None:
            self.stats.rotations += 1
            line.draining[line.active] = time.monotonic() + self.settings.overlap
            log.info("switched upstream to connection %s", conn.id)
        self._promote(line, conn)

    def _on_lines(self, _conn: None, count: int) -> None:
        """Add the missing lines (each opens after the one before delivered) or close extras."""
        while len(self.lines) > count:
            retired = self.lines.pop()
            conns = retired.connections()
            retired.active = retired.candidate = None  # its closes are not losses to recover
            retired.draining.clear()
            for conn in conns:
                conn.close()
        while len(self.lines) < count:
            self.lines.append(Line(len(self.lines), self.settings))
            if self.lines[-2].delivered_once:
                self._open_next_line(self.lines[-2])
        self._update_connected()

    def _open_next_line(self, line: Line) -> None:
        """Line B opens a moment after line A first delivered: never both at once."""
        if line.index + 1 < len(self.lines):
            following = self.lines[line.index + 1]
            if math.isinf(following.next_attempt):
                following.next_attempt = time.monotonic() + self.settings.stagger

    def _promote(self, line: Line, conn: Connection) -> None:
        line.active, line.candidate = conn, None
        line.rotate_soon = False
        if self._gap_pending and self.on_gap is not None:
            self._gap_pending = False
            self.on_gap()

    def _on_stop(self, _conn: None, _detail: object) -> None:
        """Nothing to do: `stop()` posts it to end the supervisor's wait for events."""

    def _on_rotate(self, _conn: None, _detail: object) -> None:
        for line in self.lines:
            if line.active is not None and line.candidate is None:
                line.rotate_soon = True
                line.next_attempt = 0.0

    def _on_shutdown(self, conn: Connection, _detail: object) -> None:
        line = conn.line
        if conn is line.active:
            log.info("serverShutdown on connection %s: rotating now", conn.id)
            line.rotate_soon = True
            line.next_attempt = 0.0

    def _on_failed(self, conn: Connection, ended: Ended) -> None:
        self._on_closed(conn, ended)

    def _on_closed(self, conn: Connection, ended: Ended) -> None:
        now = time.monotonic()
        if conn.messages == 0:  # never delivered: its span is still open
            conn.span.add_event("failed", {"reason": ended.text})
            conn.span.end()
        if conn.opened_at is not None:
            self._open -= 1
        line = conn.line
        line.draining.pop(conn, None)
        if conn is line.candidate:
            line.candidate = None
            delay = self._retry(line, now, ended, failed=True)
            log.warning("connection %s failed (%s); retry in %.2f s", conn.id, ended.text, delay)
        elif conn is line.active:
            self._lose(line, conn, now, ended)
        self._update_connected()
