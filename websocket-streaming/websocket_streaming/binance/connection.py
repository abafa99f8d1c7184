"""One Binance WebSocket connection: connect, read every frame, close (its own thread)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import websocket

from shared import tracing

from .errors import Ended, ended_by_close, ended_by_error

if TYPE_CHECKING:
    from ..upstream import UpstreamManager
    from .lines import Line

log = logging.getLogger("websocket_streaming.upstream")


class Connection:
    """One WebSocket connection that connects and reads in its own thread."""

    def __init__(self, conn_id: int, url: str, manager: UpstreamManager, line: Line) -> None:
        self.id = conn_id
        self.url = url
        self.manager = manager
        self.line = line
        self.ws: websocket.WebSocket | None = None
        self.opened_at: float | None = None
        self.last_message_at: float | None = None
        self.messages = 0
        self.closing = False
        self.span: tracing.Span = tracing.NOOP_SPAN  # from the attempt to the first frame
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
            self.manager.post("failed", self, ended_by_error(exc))
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

    def _read(self, ws: websocket.WebSocket) -> Ended:
        """Read until the connection ends; returns why it ended."""
        while True:
            try:
                opcode, data = ws.recv_data()
            except Exception as exc:
                return ended_by_error(exc)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return ended_by_close(data)
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
