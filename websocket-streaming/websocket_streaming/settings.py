"""websocket-streaming's own configuration keys (shared ones live in shared/config.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.config import (
    ConfigError,
    Setting,
    SharedConfig,
    parse_bool,
    parse_float,
    parse_int,
    parse_str,
    parse_url,
)
from shared.symbols import SYMBOL_RULE, is_symbol

from .binance.streams import combined_url, stream_names
from .candles import parse_intervals

SERVICE = "websocket-streaming"
DEFAULTS = {"PORT": 5021}
# The `scope` of each @rate_limit route: RATE_LIMIT_<SCOPE> sets its requests per minute.
RATE_LIMIT_SCOPES = ("price", "stream", "candles")
STREAM_KINDS = ("trade", "aggTrade", "miniTicker", "ticker", "bookTicker")
KLINE_RE = re.compile(r"^kline_(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)$")


def check(config: Mapping[str, Any]) -> None:
    """The checks across settings: the symbols and streams must fit one combined-stream URL."""
    try:
        combined_url(
            config["BINANCE_WS_URL"], stream_names(tuple(config["SYMBOLS"]), tuple(config["WS_STREAMS"]))
        )
    except ValueError as exc:
        raise ConfigError("SYMBOLS", str(exc)) from None


def parse_stream_kinds(value: str) -> tuple[str, ...]:
    """Comma-separated per-symbol stream kinds, e.g. `aggTrade,ticker` or `kline_1m`."""
    kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
    if not kinds:
        raise ValueError("must name at least one stream kind")
    for kind in kinds:
        if kind not in STREAM_KINDS and not KLINE_RE.match(kind):
            raise ValueError(f"unknown stream kind {kind!r}; use {', '.join(STREAM_KINDS)} or kline_<interval>")
    return kinds


def parse_symbols(value: str) -> tuple[str, ...]:
    """Parse a comma-separated list of exchange symbols, upper-cased, no duplicates."""
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in value.split(",") if s.strip()))
    if not symbols:
        raise ValueError("must name at least one symbol")
    bad = [s for s in symbols if not is_symbol(s)]
    if bad:
        raise ValueError(f"invalid symbol {bad[0]!r}: {SYMBOL_RULE}")
    return symbols


def parse_prefix(value: str) -> str:
    """A Redis key prefix; empty is allowed."""
    return parse_str(value) or ""


CANDLE_SETTINGS = (
    Setting(
        "CANDLE_INTERVALS",
        parse_intervals,
        ("1m", "5m", "1h"),
        "candle intervals built from aggTrade (1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M)",
    ),
    Setting(
        "CANDLE_HISTORY",
        parse_int(10, 1000),
        500,
        "candles kept per symbol and interval (memory: this x intervals x symbols); /candles' largest limit",
    ),
    Setting(
        "CANDLE_REST_WEIGHT_PER_MINUTE",
        parse_int(10, 6000),
        1200,
        "Binance request weight candles may spend per minute (klines 2, aggTrades 4; Binance allows 6000)",
    ),
    Setting(
        "CANDLE_HEAL_MAX_TRADES",
        parse_int(1000, 10_000_000),
        100_000,
        "the largest hole in aggregate trade ids filled over REST; older ids of a larger one stay missing",
    ),
    Setting(
        "CANDLE_EVENT_SECONDS", parse_float(0.05, 60.0), 0.5, "how often changed candles become SSE events"
    ),
)

SETTINGS: tuple[Setting, ...] = (
    Setting("SYMBOLS", parse_symbols, ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")),
    Setting("BINANCE_WS_URL", parse_url("ws", "wss"), "wss://stream.binance.com:9443"),
    Setting("BINANCE_REST_URL", parse_url("http", "https"), "https://api.binance.com"),
    Setting("PRICE_STALE_SECONDS", parse_float(0.1), 10.0),
    Setting(
        "INGEST_ENABLED",
        parse_bool,
        True,
        "hold the Binance connection here (0: with Redis, only serve what others publish)",
    ),
    Setting(
        "WS_STREAMS",
        parse_stream_kinds,
        ("aggTrade", "ticker", "bookTicker"),
        "per-symbol streams: aggTrade for the last price, ticker for the 24 h figures, "
        "bookTicker for best bid/ask with sizes",
    ),
    Setting("WS_BACKFILL_ENABLED", parse_bool, True, "fetch last prices over REST after a gap"),
    Setting(
        "BINANCE_TIME_CHECK_SECONDS",
        parse_float(0.0, 86_400.0),
        300.0,
        "how often the upstream holder measures Binance's clock (GET /api/v3/time); 0: never",
    ),
    Setting(
        "WS_MAX_CONNECTION_AGE_SECONDS",
        parse_float(0.1, 86_400.0),
        23.5 * 3600,
        "rotate (make-before-break) before Binance's 24 h cut",
    ),
    Setting(
        "WS_CONNECTIONS",
        parse_int(1, 2),
        2,
        "2: an A and a B feed, two connections to the same streams, each update applied once; "
        "1: a single connection (a fault costs a reconnect's gap)",
    ),
    Setting("WS_BACKOFF_BASE_SECONDS", parse_float(0.001, 1.0), 0.5, "first delay after a failed attempt"),
    Setting("WS_BACKOFF_CAP_SECONDS", parse_float(0.01, 600.0), 30.0),
    Setting(
        "WS_BACKOFF_RESET_SECONDS",
        parse_float(0.1),
        60.0,
        "a connection up this long starts the failure count over (a close 1008 after it counts as the first)",
    ),
    Setting("WS_CONNECT_ATTEMPTS_PER_5_MIN", parse_int(1, 300), 300),
    Setting(
        "WS_ROTATION_OVERLAP_SECONDS",
        parse_float(0.0, 60.0),
        1.0,
        "how long the old connection keeps reading after the switch",
    ),
    Setting(
        "WS_LINE_STAGGER_SECONDS",
        parse_float(0.0, 60.0),
        1.0,
        "line B opens this long after line A first delivers (so the two never reconnect in step)",
    ),
    Setting(
        "WS_STREAM_SILENCE_SECONDS",
        parse_float(1.0, 86_400.0),
        60.0,
        "a subscribed stream silent this long while the others deliver is reported and healed by a reconnect",
    ),
    Setting("WS_RING_SIZE", parse_int(16, 10_000_000), 65_536),
    *CANDLE_SETTINGS,
    Setting("WS_LEADER_LOCK_TTL_SECONDS", parse_float(0.3, 300.0), 10.0),
    Setting("PRICE_REDIS_TTL_SECONDS", parse_int(1), 3600),
    Setting("REDIS_KEY_PREFIX", parse_prefix, ""),
    Setting("SSE_HEARTBEAT_SECONDS", parse_float(0.05, 300.0), 15.0),
    Setting("SSE_RETRY_SECONDS", parse_float(0.1, 300.0), 1.0, "reconnect delay told to SSE clients (retry:)"),
    Setting("SSE_MAX_SUBSCRIBERS", parse_int(1, 10_000), 256),
    Setting(
        "SSE_MAX_STREAMS_PER_CLIENT",
        parse_int(1, 10_000),
        8,
        "concurrent streams one client address may hold per worker (429 past it)",
    ),
    Setting(
        "SSE_QUEUE_EVENTS",
        parse_int(16, 10_000_000),
        8192,
        "events a subscriber may fall behind before it is sent `overflow` and closed",
    ),
    Setting(
        "SSE_WRITE_TIMEOUT_SECONDS",
        parse_float(0.1, 3600.0),
        30.0,
        "a stream whose write stays blocked this long (the client stopped reading) is cut",
    ),
)


@dataclass(frozen=True, repr=False)
class StreamingConfig(SharedConfig):
    """websocket-streaming's typed configuration: the shared settings and those above."""

    symbols: tuple[str, ...]
    binance_ws_url: str
    binance_rest_url: str
    price_stale_seconds: float
    ingest_enabled: bool
    ws_streams: tuple[str, ...]
    ws_backfill_enabled: bool
    binance_time_check_seconds: float
    ws_max_connection_age_seconds: float
    ws_connections: int
    ws_backoff_base_seconds: float
    ws_backoff_cap_seconds: float
    ws_backoff_reset_seconds: float
    ws_connect_attempts_per_5_min: int
    ws_rotation_overlap_seconds: float
    ws_line_stagger_seconds: float
    ws_stream_silence_seconds: float
    ws_ring_size: int
    ws_leader_lock_ttl_seconds: float
    price_redis_ttl_seconds: int
    redis_key_prefix: str
    sse_heartbeat_seconds: float
    sse_retry_seconds: float
    sse_max_subscribers: int
    sse_max_streams_per_client: int
    sse_queue_events: int
    sse_write_timeout_seconds: float
    candle_intervals: tuple[str, ...]
    candle_history: int
    candle_rest_weight_per_minute: int
    candle_heal_max_trades: int
    candle_event_seconds: float
