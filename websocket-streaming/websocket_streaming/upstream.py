"""The upstream WebSocket: one combined-stream connection kept alive whatever happens.

Threads: one supervisor (connect, backoff, watchdog, rotation) and one reader per open
connection. Readers hand every text frame to the frame handler directly (no queue, so
nothing can fill up and drop); the supervisor learns about opens, closes and first
messages through an unbounded event queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

import websocket

from .backoff import AttemptWindow, Backoff
from .parser import SERVER_SHUTDOWN
from .stats import IngestStats

log = logging.getLogger("websocket_streaming.upstream")

FrameHandler = Callable[[bytes, float], str | None]
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


class Connection:
    """One WebSocket connection that connects and reads in its own thread."""

    def __init__(self, conn_id: int, url: str, manager: UpstreamManager) -> None:
        self.id = conn_id
        self.url = url
        self.manager = manager
        self.ws: websocket.WebSocket | None = None
        self.opened_at: float | None = None
        self.last_message_at: float | None = None
        self.messages = 0
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"ws-reader-{conn_id}")

    def start(self) -> None:
        """Connect and read in the background."""
        self.thread.start()

    def _run(self) -> None:
        try:
            ws = websocket.create_connection(
                self.url,
                timeout=self.manager.settings.connect_timeout,
                skip_utf8_validation=True,
                enable_multithread=True,
            )
        except Exception as exc:
            self.manager.post("failed", self, exc)
            return
        ws.settimeout(None)  # reads block; the watchdog aborts a silent socket
        self.ws = ws
        self.opened_at = self.last_message_at = time.monotonic()
        if self.closing:
            ws.abort()
        self.manager.post("opened", self, None)
        why = self._read(ws)
        ws.shutdown()  # release the socket now, not whenever the object is collected
        self.manager.post("closed", self, why)

    def _read(self, ws: websocket.WebSocket) -> object:
        """Read until the connection ends; returns why it ended."""
        while True:
            try:
                opcode, data = ws.recv_data()
            except Exception as exc:
                return exc
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return close_reason(data)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.last_message_at = time.monotonic()
                self.messages += 1
                self.manager.deliver(self, data)

    def close(self) -> None:
        """Close with a close frame and cut the socket; safe from any thread, twice."""
        self.closing = True
        ws = self.ws
        if ws is None:
            return
        try:
            ws.send_close(websocket.STATUS_NORMAL)
        except Exception as exc:
            log.debug("close frame not sent on connection %s: %s", self.id, exc)
        ws.abort()

    def age(self, now: float) -> float:
        """Seconds since the connection opened (0 before)."""
        return 0.0 if self.opened_at is None else now - self.opened_at


def close_reason(data: bytes) -> str:
    """`close <code> <reason>` from a close frame payload."""
    if len(data) < 2:
        return "close (no code)"
    code = int.from_bytes(data[:2], "big")
    return f"close {code} {data[2:].decode('utf-8', 'replace')}".strip()


class DedupWindow:
    """While two connections overlap, let through one copy of each frame."""

    def __init__(self) -> None:
        self.pending: dict[int, Counter[bytes]] = {}

    def duplicate(self, conn_id: int, data: bytes) -> bool:
        """True when another connection already delivered this exact frame."""
        for other, frames in self.pending.items():
            if other != conn_id and frames[data] > 0:
                frames[data] -= 1
                if frames[data] == 0:
                    del frames[data]
                return True
        self.pending.setdefault(conn_id, Counter())[data] += 1
        return False

    def clear(self) -> None:
        """Forget everything once only one connection is left."""
        self.pending.clear()


class UpstreamManager:
    """Keeps one live combined-stream connection: backoff, watchdog, make-before-break."""

    def __init__(
        self,
        url: str,
        handler: FrameHandler,
        stats: IngestStats,
        settings: UpstreamSettings | None = None,
        on_gap: Callable[[], None] | None = None,
        report: Reporter | None = None,
    ) -> None:
        self.url = url
        self.handler = handler
        self.stats = stats
        self.settings = settings or UpstreamSettings()
        self.on_gap = on_gap
        self.report = report
        self.backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        self.window = AttemptWindow(self.settings.attempt_limit, self.settings.attempt_window)
        self.active: Connection | None = None
        self.candidate: Connection | None = None
        self.draining: dict[Connection, float] = {}
        self._events: queue.SimpleQueue[tuple[str, Connection, object]] = queue.SimpleQueue()
        self._ids = count(1)
        self._dedup = DedupWindow()
        self._deliver_lock = threading.Lock()
        self._next_attempt = 0.0
        self._gap_pending = True
        self._rotate_soon = False
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
        if self._thread is not None:
            self._thread.join(timeout)
        for conn in self._connections():
            conn.close()
        for conn in self._connections():
            conn.thread.join(max(0.1, timeout / 4))
        self.active = self.candidate = None
        self.draining.clear()
        self.stats.connected = False

    @property
    def alive(self) -> bool:
        """True while the supervisor thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _connections(self) -> list[Connection]:
        conns = [self.active, self.candidate, *self.draining]
        return [c for c in conns if c is not None]

    # ---- called from reader threads --------------------------------------------------
    def post(self, kind: str, conn: Connection, detail: object) -> None:
        """Tell the supervisor something happened to `conn`."""
        self._events.put((kind, conn, detail))

    def deliver(self, conn: Connection, data: bytes) -> None:
        """Hand one frame to the handler; never raises."""
        received_at = time.time()
        self.stats.last_message_at = received_at
        if conn.messages == 1:
            self.post("first", conn, None)
        try:
            kind = self._handle(conn, data, received_at)
        except Exception as exc:
            self._failed("frame handler failed", exc, conn)
            return
        if kind == SERVER_SHUTDOWN:
            self.post("shutdown", conn, None)

    def _handle(self, conn: Connection, data: bytes, received_at: float) -> str | None:
        if len(self._connections()) == 1:
            return self.handler(data, received_at)
        with self._deliver_lock:  # two connections overlap: one copy of each frame
            if self._dedup.duplicate(conn.id, data):
                return None
            return self.handler(data, received_at)

    def _failed(self, what: str, exc: BaseException, conn: Connection | None = None) -> None:
        self.stats.handler_errors += 1
        log.error("%s: %r", what, exc, exc_info=exc)
        if self.report is not None:
            try:
                self.report(exc, {"connection": conn.id if conn else None, "what": what})
            except Exception:
                log.exception("error reporter failed")

    # ---- the supervisor --------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                self._drain_events()
                self._check(time.monotonic())
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

    def _check(self, now: float) -> None:
        idle = self.active is None and self.candidate is None
        if (idle or self._rotation_due(now)) and now >= self._next_attempt:
            self._connect(now)
        if self.active is not None:
            self._watchdog(self.active, now)
        self._check_candidate(now)
        self._close_drained(now)
        self._maybe_reset_backoff(now)

    def _rotation_due(self, now: float) -> bool:
        """Time for make-before-break: after serverShutdown, or at the maximum age."""
        active = self.active
        if active is None or self.candidate is not None:
            return False
        return self._rotate_soon or active.age(now) >= self.settings.max_age

    def _connect(self, now: float) -> None:
        wait = self.window.wait_time()
        if wait > 0:
            log.warning("connection attempt budget used up; next attempt in %.1f s", wait)
            self._next_attempt = now + wait
            return
        self.window.record()
        self.stats.connection_attempts += 1
        if self.active is None and self.stats.connection_attempts > 1:
            self.stats.reconnects += 1
        self.candidate = Connection(next(self._ids), self.url, self)
        log.info("connecting upstream (connection %s)", self.candidate.id)
        self.candidate.start()

    def _watchdog(self, active: Connection, now: float) -> None:
        if active.last_message_at is None:
            return
        silent = now - active.last_message_at
        if silent > self.settings.stale_after:
            log.warning("connection %s silent for %.1f s: replacing it", active.id, silent)
            self.stats.watchdog_reconnects += 1
            self._lose(active, now, "watchdog")

    def _check_candidate(self, now: float) -> None:
        cand = self.candidate
        if cand is None or self.active is None or cand.opened_at is None:
            return
        if now - cand.opened_at > self.settings.stale_after:
            log.warning("new connection %s delivered nothing: giving up on it", cand.id)
            self.candidate = None
            cand.close()
            self._next_attempt = now + self.backoff.next_delay()

    def _close_drained(self, now: float) -> None:
        for conn, until in list(self.draining.items()):
            if now >= until:
                conn.close()

    def _maybe_reset_backoff(self, now: float) -> None:
        active = self.active
        if (
            self.backoff.failures
            and active is not None
            and active.age(now) >= self.settings.backoff_reset_after
        ):
            self.backoff.reset()

    def _lose(self, conn: Connection, now: float, why: object) -> None:
        """The active connection is gone: reconnect after a backoff, backfill after."""
        if conn is self.active:
            self.active = None
            self._gap_pending = True
            self._next_attempt = now + self.backoff.next_delay()
            self.stats.connected = self.candidate is not None and self.candidate.opened_at is not None
            log.warning(
                "upstream connection %s lost (%s); retry in %.2f s",
                conn.id,
                why,
                max(0.0, self._next_attempt - now),
            )
            cand = self.candidate
            if cand is not None and cand.opened_at is not None:
                self._promote(cand)  # lost mid-rotation: the new connection is already open
        conn.close()

    # ---- supervisor event handlers ---------------------------------------------------
    def _on_opened(self, conn: Connection, _detail: object) -> None:
        if conn is not self.candidate:
            conn.close()
            return
        self.stats.connected = True
        if self.active is None:
            self._promote(conn)

    def _on_first(self, conn: Connection, _detail: object) -> None:
        if conn is not self.candidate:
            return
        if self.active is not None:
            self.stats.rotations += 1
            self.draining[self.active] = time.monotonic() + self.settings.overlap
            log.info("switched upstream to connection %s", conn.id)
        self._promote(conn)

    def _promote(self, conn: Connection) -> None:
        self.active, self.candidate = conn, None
        self._rotate_soon = False
        if self._gap_pending and self.on_gap is not None:
            self._gap_pending = False
            self.on_gap()

    def _on_shutdown(self, conn: Connection, _detail: object) -> None:
        if conn is self.active:
            log.info("serverShutdown on connection %s: rotating now", conn.id)
            self._rotate_soon = True
            self._next_attempt = 0.0

    def _on_failed(self, conn: Connection, exc: object) -> None:
        self._on_closed(conn, exc)

    def _on_closed(self, conn: Connection, why: object) -> None:
        now = time.monotonic()
        self.draining.pop(conn, None)
        if conn is self.candidate:
            self.candidate = None
            self._next_attempt = now + self.backoff.next_delay()
            log.warning("connection %s failed (%s); retry in %.2f s", conn.id, why, self._next_attempt - now)
            self.stats.connected = self.active is not None
        elif conn is self.active:
            self._lose(conn, now, why)
        if len(self._connections()) <= 1:
            with self._deliver_lock:
                self._dedup.clear()
