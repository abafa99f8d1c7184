"""The OpenAPI parts of candles: GET /candles/{symbol}, the Candle schema, the examples."""

from __future__ import annotations

from itertools import permutations
from typing import Any

from shared.openapi_examples import Example
from shared.symbols import SYMBOL_PATTERN

from .candles import INTERVAL_MS
from .settings import CANDLE_SETTINGS

DEFAULTS = {s.name: s.default for s in CANDLE_SETTINGS}

EVENT_NAMES = ("price", "quote", "candle")
# Every ordering of one, two or three distinct types: a repeated one is refused with a 400.
EVENTS_PATTERN = "^(" + "|".join(",".join(p) for n in range(1, 4) for p in permutations(EVENT_NAMES, n)) + ")$"
EXACT = "written from the exact decimal sum of the trades (prices as the exchange wrote them)"
CANDLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "symbol",
        "interval",
        "open_time",
        "close_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
        "first_agg_id",
        "last_agg_id",
        "closed",
        "complete",
        "source",
    ],
    "properties": {
        "symbol": {"type": "string", "pattern": "^[A-Z0-9]{2,20}$"},
        "interval": {"type": "string", "enum": list(INTERVAL_MS)},
        "open_time": {"type": "integer", "description": "epoch ms, the interval's first millisecond"},
        "close_time": {"type": "integer", "description": "epoch ms, the interval's last millisecond"},
        **{name: {"type": "number", "description": EXACT} for name in ("open", "high", "low", "close")},
        "volume": {"type": "number", "description": "base asset quantity traded; " + EXACT},
        "quote_volume": {"type": "number", "description": "sum of price x quantity; " + EXACT},
        "trades": {"type": "integer", "minimum": 0, "description": "trades (not aggregate trades) in it"},
        "first_agg_id": {"type": ["integer", "null"], "description": "null for a candle from klines"},
        "last_agg_id": {"type": ["integer", "null"], "description": "null for a candle from klines"},
        "closed": {"type": "boolean", "description": "false for the open candle (the newest)"},
        "complete": {
            "type": "boolean",
            "description": "every aggregate trade id of its span was applied (the open candle: so far); "
            "false while a hole is being healed, and for good when REST could not fill it",
        },
        "source": {
            "type": "string",
            "enum": ["trades", "klines"],
            "description": "trades: built here from aggTrade; klines: history from GET /api/v3/klines",
        },
    },
}
CANDLE_EXAMPLE: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "interval": "1m",
    "open_time": 1795514400000,
    "close_time": 1795514459999,
    "open": 43250.5,
    "high": 43262.1,
    "low": 43249.9,
    "close": 43255.0,
    "volume": 12.40512,
    "quote_volume": 536554.9830161,
    "trades": 311,
    "first_agg_id": 3301001,
    "last_agg_id": 3301204,
    "closed": True,
    "complete": True,
    "source": "trades",
}


def candles_operation(operation: Any, ok: Any) -> dict[str, Any]:
    """GET /candles/{symbol}, built with openapi.py's `_operation` and `_ok`."""
    parameters = [
        {
            "name": "symbol",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": SYMBOL_PATTERN},
        },
        {
            "name": "interval",
            "in": "query",
            "required": False,
            "description": "one of CANDLE_INTERVALS (these by default); default: the shortest",
            "schema": {"type": "string", "enum": list(DEFAULTS["CANDLE_INTERVALS"])},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": f"how many candles, 1 to CANDLE_HISTORY ({DEFAULTS['CANDLE_HISTORY']} by default); "
            "default 500",
            "schema": {"type": "integer", "minimum": 1, "maximum": DEFAULTS["CANDLE_HISTORY"]},
        },
        {
            "name": "until",
            "in": "query",
            "required": False,
            "description": "only candles opening before this (exclusive): epoch ms; an ISO 8601 date-time "
            "with a zone (2026-11-24T10:00:00Z) is taken too",
            "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"},
        },
    ]
    body = {
        "type": "object",
        "required": ["symbol", "interval", "candles"],
        "properties": {
            "symbol": {"type": "string"},
            "interval": {"type": "string"},
            "candles": {"type": "array", "items": {"$ref": "#/components/schemas/Candle"}},
        },
    }
    result: dict[str, Any] = operation(
        "Candles built from aggregate trades, newest last; the open candle included (closed: false)",
        ok("the candles", body),
        "400",
        "404",
        "429",
        parameters=parameters,
    )
    return result


CANDLE_EXAMPLES: dict[tuple[str, str], Example] = {
    ("/candles/{symbol}", "get"): {
        "parameters": {"symbol": "BTCUSDT", "interval": "1m", "limit": 2},
        "responses": {
            "200": {
                "symbol": "BTCUSDT",
                "interval": "1m",
                "candles": [
                    CANDLE_EXAMPLE,
                    {
                        **CANDLE_EXAMPLE,
                        "open_time": 1795514460000,
                        "close_time": 1795514519999,
                        "trades": 12,
                        "first_agg_id": 3301205,
                        "last_agg_id": 3301214,
                        "closed": False,
                    },
                ],
            },
            "400": {
                "error": "validation_error",
                "message": "interval: must be one of 1m, 5m, 1h",
                "details": [{"field": "interval", "message": "must be one of 1m, 5m, 1h"}],
            },
        },
    }
}
