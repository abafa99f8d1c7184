"""The fake exchange's REST endpoints: `/api/v3/ticker/price`, `/api/v3/ticker/24hr`,
`/api/v3/time` (`{"serverTime": ms}`, weight 1), and, from its record of trades,
`/api/v3/klines` (weight 2) and `/api/v3/aggTrades` (weight 4)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from .market import Market
from .trades import INTERVAL_MS

SYMBOL_RE = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
WEIGHTS = {"/api/v3/ticker/price": (2, 4), "/api/v3/ticker/24hr": (2, 80), "/api/v3/time": (1, 1)}
HISTORY_WEIGHTS = {"/api/v3/klines": 2, "/api/v3/aggTrades": 4}


@dataclass
class RestReply:
    """Status, JSON body and extra headers of one REST answer."""

    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)


class BinanceRestError(Exception):
    """A Binance error answer: HTTP status plus `{"code", "msg"}`."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.reply = RestReply(status, {"code": code, "msg": msg})


def _symbols_param(query: dict[str, list[str]]) -> list[str] | None:
    """Read `symbol=` or `symbols=[...]`; None means every symbol."""
    if "symbol" in query and "symbols" in query:
        raise BinanceRestError(400, -1101, "Combination of optional parameters invalid.")
    if "symbol" in query:
        return [query["symbol"][0]]
    if "symbols" not in query:
        return None
    try:
        names = json.loads(query["symbols"][0])
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BinanceRestError(
            400,
            -1100,
            "Illegal characters found in parameter 'symbols'; legal range is "
            '\'^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$\'.',
        )
    return names


def _check_symbols(market: Market, names: list[str]) -> None:
    """Reject a malformed or unknown symbol the way Binance does."""
    for name in names:
        if not SYMBOL_RE.match(name):
            raise BinanceRestError(
                400,
                -1100,
                "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
            )
        if name not in market.symbols:
            raise BinanceRestError(400, -1121, "Invalid symbol.")


def handle_rest(market: Market, target: str) -> RestReply:
    """Answer one REST request target (path and query) from the market's current state."""
    parts = urlsplit(target)
    if parts.path in HISTORY_WEIGHTS:
        return handle_history(market, parts.path, parse_qs(parts.query, keep_blank_values=True))
    if parts.path not in WEIGHTS:
        return RestReply(404, {"code": -1, "msg": "Not found."})
    if parts.path == "/api/v3/time":
        return RestReply(200, {"serverTime": int(time.time() * 1000)}, {"X-MBX-USED-WEIGHT-1M": "1"})
    query = parse_qs(parts.query, keep_blank_values=True)
    try:
        names = _symbols_param(query)
        _check_symbols(market, names or [])
    except BinanceRestError as err:
        return err.reply
    single = "symbol" in query
    listed = sorted(market.symbols) if names is None else names
    now_ms = int(time.time() * 1000)
    if parts.path == "/api/v3/ticker/price":
        rows = [market.rest_price(s) for s in listed]
    else:
        rows = [market.rest_24hr(s, now_ms) for s in listed]
    weight = WEIGHTS[parts.path][0 if single else 1]
    return RestReply(200, rows[0] if single else rows, {"X-MBX-USED-WEIGHT-1M": str(weight)})


def rate_limited_reply(status: int, retry_after: int) -> RestReply:
    """The 429 (back off) or 418 (banned) answer, with `Retry-After` in seconds."""
    if status == 418:
        until = int(time.time() * 1000) + retry_after * 1000
        msg = f"Way too much request weight used; IP banned until {until}."
    else:
        msg = (
            "Too many requests; current limit of IP(127.0.0.1) request weight per 1 MINUTE "
            "is 6000. Please use WebSocket Streams for live updates to avoid polling the API."
        )
    return RestReply(status, {"code": -1003, "msg": msg}, {"Retry-After": str(retry_after)})


def _long(query: dict[str, list[str]], name: str) -> int | None:
    """An optional integer parameter, as Binance reads it (-1100 when it is not one)."""
    if name not in query:
        return None
    raw = query[name][0]
    if not raw.isdigit() or not raw.isascii():
        message = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        raise BinanceRestError(400, -1100, message)
    return int(raw)


def _history_params(market: Market, query: dict[str, list[str]]) -> tuple[str, int, int | None, int | None]:
    """(symbol, limit, startTime, endTime) of a klines or aggTrades request."""
    symbol = query.get("symbol", [""])[0]
    if not symbol:
        raise BinanceRestError(
            400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    _check_symbols(market, [symbol])
    limit = _long(query, "limit")
    if limit is not None and not 1 <= limit <= 1000:
        raise BinanceRestError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return symbol, 500 if limit is None else limit, _long(query, "startTime"), _long(query, "endTime")


def handle_history(market: Market, path: str, query: dict[str, list[str]]) -> RestReply:
    """`/api/v3/klines` and `/api/v3/aggTrades`, answered from the market's record of trades."""
    try:
        symbol, limit, start, end = _history_params(market, query)
        if path == "/api/v3/klines":
            interval = query.get("interval", [""])[0]
            if interval not in INTERVAL_MS:
                raise BinanceRestError(400, -1120, "Invalid interval.")
            body: list[object] = list(market.record.klines(symbol, interval, start, end, limit))
        else:
            if start is not None and end is not None and end - start > 3_600_000:
                raise BinanceRestError(400, -1127, "More than 1 hours between startTime and endTime.")
            from_id = _long(query, "fromId")
            body = [t.rest_row() for t in market.record.page(symbol, from_id, start, end, limit)]
    except BinanceRestError as err:
        return err.reply
    return RestReply(200, body, {"X-MBX-USED-WEIGHT-1M": str(HISTORY_WEIGHTS[path])})
