"""REST backfill of last prices after a gap in the WebSocket feed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..book import PriceBook
from ..parser import ParseError, PriceUpdate, dec, signed_dec
from ..stats import IngestStats
from .rest import (
    BinanceClient,
    BinanceError,
    BinanceHTTPError,
    BinanceRateLimited,
)

log = logging.getLogger("websocket_streaming.backfill")
Reporter = Callable[[BaseException, dict[str, Any]], None]
MAX_ERROR_DELAY = 30.0


def ticker_update(row: dict[str, Any]) -> PriceUpdate:
    """A `/api/v3/ticker/24hr` row as a price update (REST names mapped to WS fields)."""
    try:
        return PriceUpdate(
            str(row["symbol"]),
            "rest",
            int(row["closeTime"]),
            price=dec(row["lastPrice"]),
            bid=dec(row["bidPrice"]),
            ask=dec(row["askPrice"]),
            open_24h=dec(row["openPrice"]),
            high_24h=dec(row["highPrice"]),
            low_24h=dec(row["lowPrice"]),
            volume_24h=dec(row["volume"]),
            change_24h_percent=signed_dec(row["priceChangePercent"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ParseError(f"unexpected 24hr ticker row: {exc!r}") from None


class Backfiller:
    """Fetches every symbol's 24 h ticker over REST, waiting out 429/418 `Retry-After`."""

    def __init__(
        self,
        client: BinanceClient,
        book: PriceBook,
        symbols: Sequence[str],
        stats: IngestStats,
        report_error: Reporter | None = None,
        error_delay: float = 1.0,
    ) -> None:
        self.client = client
        self.book = book
        self.symbols = list(symbols)
        self.stats = stats
        self.report_error = report_error
        self.error_delay = error_delay
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def trigger(self) -> None:
        """Start a backfill in the background unless one is already running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, args=(time.time(),), daemon=True, name="rest-backfill"
            )
            self._thread.start()

    def stop(self) -> None:
        """Abandon a running backfill."""
        self._stop.set()

    def _run(self, gap_seen_at: float) -> None:
        delay = self.error_delay
        while not self._stop.is_set() and self._needed(gap_seen_at):
            try:
                self._fetch_and_apply()
                return
            except BinanceRateLimited as exc:
                wait = max(exc.retry_after, self.client.blocked_for())
                log.warning("backfill: binance says wait %.1f s (%s)", wait, exc)
                self._stop.wait(wait)
            except BinanceHTTPError as exc:  # the request itself is wrong: asking again won't help
                self._failed(exc)
                return
            except Exception as exc:
                self._failed(exc)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_ERROR_DELAY)

    def _needed(self, gap_seen_at: float) -> bool:
        """False once every symbol got a WebSocket update since the gap was seen."""
        records = self.book.snapshot()
        return any(s not in records or records[s].received_at < gap_seen_at for s in self.symbols)

    def _fetch_and_apply(self) -> None:
        asked_at = time.time()
        rows = self.client.tickers_24hr(self.symbols)
        received_at = time.time()
        for row in rows:
            try:
                self.book.backfill(ticker_update(row), asked_at, received_at)
            except ParseError as exc:
                self._failed(exc)
        self.stats.backfills += 1
        log.info("backfilled %d symbols over REST", len(rows))

    def _failed(self, exc: Exception) -> None:
        self.stats.backfill_errors += 1
        log.warning("backfill failed: %r", exc)
        if self.report_error is not None and not isinstance(exc, BinanceError | ParseError):
            self.report_error(exc, {"what": "rest backfill"})
