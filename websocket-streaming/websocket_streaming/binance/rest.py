"""Binance spot REST market data: timeouts, typed errors, 429/418 `Retry-After` honoured."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import requests

DEFAULT_BASE_URL = "https://api.binance.com"
DEFAULT_TIMEOUT = (3.05, 5.0)  # (connect, read) seconds
DEFAULT_RETRY_AFTER = {429: 60.0, 418: 120.0}


class BinanceError(Exception):
    """Any failure talking to Binance."""


class BinanceUnavailable(BinanceError):
    """Network error, timeout or 5xx: try again later."""


class BinanceHTTPError(BinanceError):
    """A 4xx answer with Binance's `{"code", "msg"}` body."""

    def __init__(self, status: int, code: int | None, msg: str) -> None:
        super().__init__(f"HTTP {status}: {msg} (code {code})")
        self.status, self.code, self.msg = status, code, msg


class BinanceRateLimited(BinanceError):
    """429 (back off) or 418 (IP banned): no request is sent until `retry_after` passes."""

    def __init__(self, retry_after: float, banned: bool) -> None:
        kind = "IP banned (418)" if banned else "rate limited (429)"
        super().__init__(f"binance {kind}; retry after {retry_after:.0f} s")
        self.retry_after, self.banned = retry_after, banned


class BinanceClient:
    """Thread-safe client for the market-data endpoints the services need."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._banned = False
        self.used_weight: int | None = None

    def ticker_price(self, symbol: str) -> dict[str, str]:
        """`{"symbol", "price"}` for one symbol (price as Binance's exact string)."""
        found: dict[str, str] = self._get("/api/v3/ticker/price", {"symbol": symbol.upper()})
        return found

    def ticker_prices(self, symbols: Iterable[str]) -> list[dict[str, str]]:
        """Latest prices for several symbols in one request."""
        found: list[dict[str, str]] = self._get("/api/v3/ticker/price", {"symbols": _symbols_param(symbols)})
        return found

    def ticker_24hr(self, symbol: str) -> dict[str, Any]:
        """The rolling 24 h ticker of one symbol."""
        found: dict[str, Any] = self._get("/api/v3/ticker/24hr", {"symbol": symbol.upper()})
        return found

    def tickers_24hr(self, symbols: Iterable[str]) -> list[dict[str, Any]]:
        """The rolling 24 h tickers of several symbols."""
        found: list[dict[str, Any]] = self._get("/api/v3/ticker/24hr", {"symbols": _symbols_param(symbols)})
        return found

    def klines(self, symbol: str, interval: str = "1m", limit: int = 500) -> list[list[Any]]:
        """Candles: lists of 12 fields, oldest first."""
        params = {"symbol": symbol.upper(), "interval": interval, "limit": limit}
        found: list[list[Any]] = self._get("/api/v3/klines", params)
        return found

    def agg_trades(
        self,
        symbol: str,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """`GET /api/v3/aggTrades` (weight 4): aggregate trades from `from_id` or within a time
        span (less than an hour), oldest first; rows `{"a", "p", "q", "f", "l", "T", "m", "M"}`."""
        params: dict[str, Any] = {"symbol": symbol.upper(), "limit": limit}
        for name, value in (("fromId", from_id), ("startTime", start_time), ("endTime", end_time)):
            if value is not None:
                params[name] = value
        found: list[dict[str, Any]] = self._get("/api/v3/aggTrades", params)
        return found

    def server_time(self) -> int:
        """Binance's clock: `serverTime` of `GET /api/v3/time` (weight 1), in ms since the epoch."""
        found = self._get("/api/v3/time", {})
        if not isinstance(found, dict) or not isinstance(found.get("serverTime"), int):
            raise BinanceUnavailable(f"unexpected /api/v3/time answer: {str(found)[:80]}")
        return int(found["serverTime"])

    def blocked_for(self) -> float:
        """Seconds left before Binance's `Retry-After` allows another request."""
        return max(0.0, self._blocked_until - self._clock())

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        """The decoded JSON answer (its shape is Binance's, documented by each caller's type)."""
        self._raise_if_blocked()
        try:
            response = self.session.get(self.base_url + path, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise BinanceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        weight = response.headers.get("X-MBX-USED-WEIGHT-1M")
        self.used_weight = int(weight) if weight and weight.isdigit() else self.used_weight
        return self._decode(response)

    def _raise_if_blocked(self) -> None:
        left = self.blocked_for()
        if left > 0:
            raise BinanceRateLimited(left, self._banned)

    def _decode(self, response: requests.Response) -> Any:
        status = response.status_code
        if status in DEFAULT_RETRY_AFTER:
            raise self._block(status, response.headers.get("Retry-After"))
        if status >= 500:
            raise BinanceUnavailable(f"HTTP {status} from binance")
        try:
            body = response.json()
        except ValueError as exc:
            raise BinanceUnavailable(f"HTTP {status}: body is not JSON") from exc
        if status >= 400:
            info = body if isinstance(body, dict) else {}
            raise BinanceHTTPError(status, info.get("code"), str(info.get("msg", "error")))
        return body

    def _block(self, status: int, header: str | None) -> BinanceRateLimited:
        try:
            retry_after = max(0.0, float(header)) if header else DEFAULT_RETRY_AFTER[status]
        except ValueError:
            retry_after = DEFAULT_RETRY_AFTER[status]
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + retry_after)
            self._banned = status == 418
        return BinanceRateLimited(retry_after, status == 418)


def _symbols_param(symbols: Iterable[str]) -> str:
    return json.dumps([s.upper() for s in symbols], separators=(",", ":"))
