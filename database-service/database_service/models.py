"""Pydantic models: they validate requests and generate /openapi.json, so the two agree."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
)

from shared.symbols import SYMBOL_PATTERN, normalise_symbol

MIN_TIME_US = 0  # 1970-01-01T00:00:00Z
MAX_TIME_US = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z
METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 32
MAX_BIGINT = 2**63 - 1
_TIMEFRAME = re.compile(r"^[1-9][0-9]{0,3}[smhdwM]$")
_EPOCH_MS = re.compile(r"^-?[0-9]{1,16}$")


def _number(value: Any) -> Decimal:
    """Accept JSON numbers only (int or decimal), never strings or booleans."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number")
    result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not result.is_finite():
        raise ValueError("must be a finite number")
    return result


def _symbol(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return normalise_symbol(value)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def parse_timestamp(value: Any) -> int:
    """ISO 8601 with a zone, or epoch milliseconds (number or digit string) -> UTC epoch us."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 string with a time zone or epoch milliseconds")
    if isinstance(value, str) and _EPOCH_MS.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, int | float | Decimal):
        millis = _number(value)
        if abs(millis) > MAX_TIME_US:  # refuse before converting a huge exponent to int
            raise ValueError("must be between 1970-01-01 and 2200-01-01")
        micros = millis * 1000
        return _in_range(int(micros.to_integral_value(rounding="ROUND_FLOOR")))
    if isinstance(value, str):
        return _in_range(_iso_to_us(value))
    raise ValueError("must be an ISO 8601 string with a time zone or epoch milliseconds")


def _iso_to_us(text: str) -> int:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-11-24T10:00:00Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must include a time zone (Z or +hh:mm)")
    delta = parsed.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _in_range(us: int) -> int:
    if not MIN_TIME_US <= us < MAX_TIME_US:
        raise ValueError("must be between 1970-01-01 and 2200-01-01")
    return us


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Numbers become floats (JSONB and SQLite store them so); size and depth are bounded."""
    cleaned: dict[str, Any] = _floats(value, 0)
    size = len(json.dumps(cleaned, separators=(",", ":"), ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"must be at most {METADATA_MAX_BYTES} bytes as JSON, got {size}")
    return cleaned


def _floats(value: Any, depth: int) -> Any:
    if depth > METADATA_MAX_DEPTH:
        raise ValueError(f"must not be nested deeper than {METADATA_MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {k: _floats(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v, depth + 1) for v in value]
    if isinstance(value, Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("numbers must be finite")
        return number
    return value


def _number_schema(**extra: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "number", **extra})


TIMESTAMP_SCHEMA = {
    "oneOf": [
        {"type": "string", "format": "date-time", "description": "ISO 8601 with a time zone"},
        {"type": "integer", "description": "epoch milliseconds"},
    ]
}

Symbol = Annotated[
    str,
    BeforeValidator(_symbol),
    WithJsonSchema({"type": "string", "pattern": SYMBOL_PATTERN, "description": "upper-cased"}),
]
Price = Annotated[
    Decimal,
    BeforeValidator(_number),
    Field(gt=0, lt=10**15, decimal_places=18),
    _number_schema(exclusiveMinimum=0, exclusiveMaximum=10**15),
]
NonNegative = Annotated[
    Decimal,
    BeforeValidator(_number),
    Field(ge=0, lt=10**15, decimal_places=18),
    _number_schema(minimum=0, exclusiveMaximum=10**15),
]
Confidence = Annotated[
    Decimal, BeforeValidator(_number), Field(ge=0, le=1), _number_schema(minimum=0, maximum=1)
]
Timestamp = Annotated[int, BeforeValidator(parse_timestamp), WithJsonSchema(TIMESTAMP_SCHEMA)]
Text64 = Annotated[str, Field(min_length=1, max_length=64)]
ClientId = Annotated[str, Field(min_length=1, max_length=128)]
Timeframe = Annotated[str, Field(pattern=_TIMEFRAME.pattern, max_length=5)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
BigId = Annotated[int, Strict(), Field(ge=1, le=MAX_BIGINT)]
Action = Annotated[Literal["BUY", "SELL", "HOLD"], BeforeValidator(_upper)]
Side = Annotated[Literal["LONG", "SHORT"], BeforeValidator(_upper)]


class SignalIn(BaseModel):
    """A trading signal to save."""

    model_config = ConfigDict(extra="forbid", title="SignalIn")

    symbol: Symbol
    action: Action = Field(description="BUY, SELL or HOLD (case-insensitive)")
    price: Price
    confidence: Confidence | None = None
    strategy: Text64 | None = None
    timeframe: Timeframe | None = Field(default=None, description="e.g. 1m, 15m, 4h, 1d")
    timestamp: Timestamp | None = Field(default=None, description="default: now; stored as UTC")
    metadata: Metadata | None = Field(default=None, description="JSON object, at most 16 KiB")
    client_id: ClientId | None = Field(default=None, description="idempotency key")


class TradeIn(BaseModel):
    """A closed trade to record."""

    model_config = ConfigDict(extra="forbid", title="TradeIn")

    symbol: Symbol
    entry_price: Price
    exit_price: Price
    side: Side = Field(default="LONG", description="LONG or SHORT (case-insensitive)")
    quantity: Price = Decimal(1)
    fees: NonNegative = Decimal(0)
    strategy: Text64 | None = None
    signal_id: BigId | None = None
    entry_time: Timestamp | None = None
    exit_time: Timestamp | None = Field(default=None, description="default: now")
    client_id: ClientId | None = Field(default=None, description="idempotency key")
    metadata: Metadata | None = Field(default=None, description="JSON object, at most 16 KiB")


class HistoryQuery(BaseModel):
    """Query string of GET /signals/history."""

    model_config = ConfigDict(extra="forbid", title="HistoryQuery")

    symbol: Symbol | None = None
    strategy: Text64 | None = None
    action: Action | None = None
    since: Timestamp | None = Field(default=None, description="inclusive")
    until: Timestamp | None = Field(default=None, description="exclusive")
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=200, description="next_cursor of the previous page")


class StatsQuery(BaseModel):
    """Query string of GET /performance/stats (time filters apply to exit_time)."""

    model_config = ConfigDict(extra="forbid", title="StatsQuery")

    strategy: Text64 | None = None
    symbol: Symbol | None = None
    since: Timestamp | None = Field(default=None, description="inclusive")
    until: Timestamp | None = Field(default=None, description="exclusive")
    group_by: Literal["strategy", "symbol"] | None = None


class SignalOut(BaseModel):
    """A stored signal."""

    model_config = ConfigDict(title="Signal")

    id: int
    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    price: float
    confidence: float | None
    strategy: str | None
    timeframe: str | None
    timestamp: datetime
    metadata: dict[str, Any] | None
    client_id: str | None
    created_at: datetime


class SignalBatchOut(BaseModel):
    """Answer to an array of signals: each stored signal, in request order."""

    model_config = ConfigDict(title="SignalBatch")

    count: int
    created: int = Field(description="signals new in this request (the rest had a known client_id)")
    signals: list[SignalOut]


class SignalPage(BaseModel):
    """One page of signal history, newest first."""

    model_config = ConfigDict(title="SignalPage")

    signals: list[SignalOut]
    count: int
    next_cursor: str | None = Field(description="pass as cursor for the next page; null at the end")


class TradeOut(BaseModel):
    """A stored trade with its computed fields."""

    model_config = ConfigDict(title="Trade")

    id: int
    symbol: str
    side: Literal["LONG", "SHORT"]
    entry_price: float
    exit_price: float
    quantity: float
    fees: float
    pnl: float
    pnl_percent: float
    outcome: Literal["win", "loss", "breakeven"]
    strategy: str | None
    signal_id: int | None
    entry_time: datetime | None
    exit_time: datetime
    duration_seconds: float | None
    metadata: dict[str, Any] | None
    client_id: str | None
    created_at: datetime


class Stats(BaseModel):
    """Statistics over closed trades (freqtrade's definitions)."""

    model_config = ConfigDict(title="Stats")

    total_trades: int
    wins: int
    losses: int
    breakeven: int
    win_rate: float | None
    total_pnl: float
    average_pnl: float | None
    average_win: float | None
    average_loss: float | None
    profit_factor: float | None = Field(description="gross profit / |gross loss|; null with no losses")
    expectancy: float | None
    max_drawdown: float = Field(description="largest fall of cumulative pnl, in exit-time order")
    sqn: float | None = Field(description="sqrt(n) * mean / sample stddev; null for n < 2")
    best_trade: float | None
    worst_trade: float | None
    average_duration_seconds: float | None


class StatsGroup(Stats):
    """Statistics of one group."""

    model_config = ConfigDict(title="StatsGroup")

    key: str | None = Field(description="the strategy or symbol of this group")


class GroupedStats(BaseModel):
    """Statistics per strategy or per symbol."""

    model_config = ConfigDict(title="GroupedStats")

    group_by: Literal["strategy", "symbol"]
    groups: list[StatsGroup]


class ServiceStats(BaseModel):
    """Answer of GET /stats."""

    model_config = ConfigDict(title="ServiceStats")

    service: str
    backend: Literal["sqlite", "postgresql", "timescaledb"]
    signals: int
    trades: int
    migrations: list[str]
    uptime_seconds: float
    cache: str


class ErrorDetail(BaseModel):
    """One invalid field."""

    field: str
    message: str


class Error(BaseModel):
    """Every non-2xx answer."""

    model_config = ConfigDict(title="Error")

    error: str = Field(description="machine-readable code, e.g. validation_error")
    message: str
    details: list[ErrorDetail] | None = None
