"""Pydantic models: they validate requests and generate /openapi.json, so the two agree."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticKnownError

from shared.symbols import SYMBOL_PATTERN, SYMBOL_RE, normalise_symbol

# Timestamps: years 1970 to 2199 as written (an ISO string's zone offset may move the UTC
# instant up to a day outside), or epoch milliseconds in [0, 2200-01-01).
MIN_EPOCH_MS = 0
MAX_EPOCH_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z, exclusive
DAY_US = 86_400_000_000
MIN_TIME_US = MIN_EPOCH_MS * 1000 - DAY_US  # the earliest instant any accepted timestamp names
MAX_TIME_US = MAX_EPOCH_MS * 1000 + DAY_US  # exclusive
YEAR_PATTERN = "^(19[7-9][0-9]|2[01][0-9]{2})-"
# Money amounts: JSON numbers stored as the nearest IEEE 754 double on both backends.
MIN_PRICE = Decimal("5e-324")  # the smallest positive double: every positive double is a price
MIN_TRADE_AMOUNT = Decimal("1e-18")  # keeps pnl_percent = pnl / (entry * quantity) a finite double
MAX_AMOUNT = Decimal(10**15)
METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 32
MAX_BIGINT = 2**63 - 1
_TIMEFRAME = re.compile(r"^[1-9][0-9]{0,3}[smhdwM]$")
_YEAR = re.compile(YEAR_PATTERN)
_QUERY_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_TIME_MESSAGE = "must be an ISO 8601 date-time with a time zone (years 1970-2199) or epoch milliseconds"


def _number(value: Any) -> Decimal:
    """Accept JSON numbers only (int or decimal), never strings or booleans."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number")
    if isinstance(value, Decimal):  # as json_body parses numbers with a fraction: no copy
        result = value
    else:
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not result.is_finite():
        raise ValueError("must be a finite number")
    return result


def nearest_double(value: Decimal) -> Decimal:
    """The double nearest `value`, as its shortest decimal: what SQLite (REAL) and PostgreSQL
    (NUMERIC) both store, and what every answer shows, so the two backends agree exactly."""
    result = Decimal(repr(float(value)))
    if result >= MAX_AMOUNT:  # e.g. 999999999999999.99: below 1e15 as written, 1e15 as a double
        raise ValueError("must be below 1e15 as the nearest double")
    return result


def _symbol(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if SYMBOL_RE.match(value) is not None:  # the common case in one call: a batch has 1000
        return value.upper()
    return normalise_symbol(value)  # its error names the rule


def _upper(value: Any) -> Any:
    # ASCII only, as for symbols: the long s (U+017F) upper-cases to S.
    return value.upper() if isinstance(value, str) and value.isascii() else value


def _any_case(*words: str) -> str:
    """A JSON Schema pattern matching `words` in any letter case (patterns have no flags)."""
    spelled = ("".join(f"[{c.upper()}{c.lower()}]" for c in word) for word in words)
    return f"^({'|'.join(spelled)})$"


def parse_timestamp(value: Any) -> int:
    """An ISO 8601 string with a zone, or epoch milliseconds as a JSON number -> UTC epoch us."""
    if isinstance(value, str):
        return _iso_to_us(value)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(_TIME_MESSAGE)
    return _millis_to_us(_number(value))


def parse_query_timestamp(value: Any) -> int:
    """Like `parse_timestamp`, for a query string: a number written as text is epoch ms."""
    if isinstance(value, str) and _QUERY_NUMBER.fullmatch(value):
        return _millis_to_us(Decimal(value))
    return parse_timestamp(value)


def _millis_to_us(millis: Decimal) -> int:
    if not MIN_EPOCH_MS <= millis < MAX_EPOCH_MS:  # checked before a huge exponent meets int()
        raise ValueError("epoch milliseconds must be in [0, 7258118400000) (1970-01-01 to 2200-01-01)")
    return int((millis * 1000).to_integral_value(rounding="ROUND_FLOOR"))


def _iso_to_us(text: str) -> int:
    if not text.isascii():  # fromisoformat reads other scripts' digits too
        raise ValueError(f"{_TIME_MESSAGE}, e.g. 2026-11-24T10:00:00Z")
    try:  # RFC 3339 allows a lower-case t and z; fromisoformat does not
        parsed = datetime.fromisoformat(text[:10] + text[10:].upper())
    except ValueError:
        raise ValueError(f"{_TIME_MESSAGE}, e.g. 2026-11-24T10:00:00Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must include a time zone (Z or +hh:mm)")
    if not _YEAR.match(text):
        raise ValueError("must be a date-time in the years 1970 to 2199")
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


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


def _amount_schema(minimum: Decimal, description: str) -> WithJsonSchema:
    """The JSON Schema of a money amount in [minimum, 1e15) (exclusive 0 for a price)."""
    inclusive = minimum > 0
    return _number_schema(
        minimum=float(minimum) if inclusive else 0,
        exclusiveMaximum=int(MAX_AMOUNT),
        description=description,
    )


TIMESTAMP_SCHEMA = {
    "oneOf": [
        {
            "type": "string",
            "format": "date-time",
            "pattern": YEAR_PATTERN,
            "description": "RFC 3339 date-time with a zone, years 1970 to 2199",
        },
        {
            "type": "number",
            "minimum": MIN_EPOCH_MS,
            "exclusiveMaximum": MAX_EPOCH_MS,
            "description": "epoch milliseconds (fractions kept to the microsecond)",
        },
    ]
}

Symbol = Annotated[
    str,
    BeforeValidator(_symbol),
    WithJsonSchema({"type": "string", "pattern": SYMBOL_PATTERN, "description": "upper-cased"}),
]
DOUBLE_NOTE = "stored and answered as the nearest IEEE 754 double"


def _bounded(
    minimum: Decimal, *, below: Decimal | None = None, at_most: Decimal | None = None, double: bool = False
) -> Callable[[Any], Decimal]:
    """One validator for a JSON number in [minimum, below) or [minimum, at_most] (`double`:
    then its nearest double). A batch checks 2000 numbers: one call each instead of four
    (before, ge, lt, after), with pydantic's own error types, so messages stay the same."""

    def check(value: Any) -> Decimal:
        # json_body parses numbers with a fraction as Decimal: checked here without a call
        number = value if type(value) is Decimal and value.is_finite() else _number(value)
        if number < minimum:
            raise PydanticKnownError("greater_than_equal", {"ge": minimum})
        if below is not None and number >= below:
            raise PydanticKnownError("less_than", {"lt": below})
        if at_most is not None and number > at_most:
            raise PydanticKnownError("less_than_equal", {"le": at_most})
        return nearest_double(number) if double else number

    return check


# Money amounts in [minimum, 1e15), stored and answered as the nearest double.
Price = Annotated[
    Decimal,
    PlainValidator(_bounded(MIN_PRICE, below=MAX_AMOUNT, double=True)),
    _amount_schema(MIN_PRICE, f"greater than 0 (at least 5e-324) and below 1e15; {DOUBLE_NOTE}"),
]
TradeAmount = Annotated[
    Decimal,
    PlainValidator(_bounded(MIN_TRADE_AMOUNT, below=MAX_AMOUNT, double=True)),
    _amount_schema(MIN_TRADE_AMOUNT, f"at least 1e-18 and below 1e15; {DOUBLE_NOTE}"),
]
NonNegative = Annotated[
    Decimal,
    PlainValidator(_bounded(Decimal(0), below=MAX_AMOUNT, double=True)),
    _amount_schema(Decimal(0), f"at least 0 and below 1e15; {DOUBLE_NOTE}"),
]
Confidence = Annotated[
    Decimal,
    PlainValidator(_bounded(Decimal(0), at_most=Decimal(1))),
    _number_schema(minimum=0, maximum=1),
]
METADATA_NOTE = "JSON object, at most 16 KiB as compact JSON and 32 levels deep; no U+0000 in strings"
Timestamp = Annotated[int, BeforeValidator(parse_timestamp), WithJsonSchema(TIMESTAMP_SCHEMA)]
QueryTimestamp = Annotated[int, BeforeValidator(parse_query_timestamp), WithJsonSchema(TIMESTAMP_SCHEMA)]
NO_NUL = r"^[^\x00]*$"  # neither database stores U+0000 in text
# What each pattern means, in the words a 400 gives (parsing.py; a regex never reaches a client).
PATTERN_MESSAGES = {
    NO_NUL: "must not contain NUL characters",
    _TIMEFRAME.pattern: "must be a count and a unit (s m h d w M), e.g. 15m",
}
Text64 = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]
ClientId = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]
Timeframe = Annotated[str, Field(pattern=_TIMEFRAME.pattern, max_length=5)]
METADATA_VALUE = "#/components/schemas/MetadataValue"
NO_NUL_KEYS = {"propertyNames": {"pattern": NO_NUL}}
# Any JSON value whose strings (keys too) have no U+0000; a component, as it is recursive.
METADATA_VALUE_SCHEMA = {
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": METADATA_VALUE}},
        {"type": "object", **NO_NUL_KEYS, "additionalProperties": {"$ref": METADATA_VALUE}},
    ]
}
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_metadata),
    WithJsonSchema({"type": "object", **NO_NUL_KEYS, "additionalProperties": {"$ref": METADATA_VALUE}}),
]


def _whole(value: Any) -> int:
    """A JSON integer: 7, or 7.0 / 7e0 (the same number to JSON Schema); never "7" or true."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # Bounded first: int(Decimal("1e999999999")) would build a billion-digit number.
    if isinstance(value, float | Decimal) and math.isfinite(value) and -(2**64) <= value <= 2**64:
        whole = int(value)
        if whole == value:
            return whole
    raise ValueError("must be an integer")


BigId = Annotated[
    int,
    BeforeValidator(_whole),
    Field(ge=1, le=MAX_BIGINT),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_BIGINT}),
]
Action = Annotated[
    Literal["BUY", "SELL", "HOLD"],
    BeforeValidator(_upper),
    WithJsonSchema({"type": "string", "pattern": _any_case("BUY", "SELL", "HOLD")}),
]
Side = Annotated[
    Literal["LONG", "SHORT"],
    BeforeValidator(_upper),
    WithJsonSchema({"type": "string", "pattern": _any_case("LONG", "SHORT")}),
]


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
    metadata: Metadata | None = Field(default=None, description=METADATA_NOTE)
    client_id: ClientId | None = Field(default=None, description="idempotency key")


# SignalIn's rules as pydantic-core constraints, checked in Rust without a Python call per
# item: a batch of 1000 signals is validated in half the time. It accepts a subset of what
# SignalIn accepts (numbers as JSON writes them, Decimal or int; upper-case actions) with
# the same values, except that a price is left as sent (new_signal stores its nearest
# double); what it refuses, SignalIn decides, with its own messages (parsing.validate_batch).
# Below this a price's nearest double is below 1e15 (the double below 1e15 is ...9.875);
# prices up to 1e15 are left to SignalIn, which checks the double itself.
_CORE_MAX_PRICE = Decimal("999999999999999.9")
# A JSON number: Decimal (json_body parses fractions so) or int, never bool or str. An int's
# bounds are the whole numbers that the Decimal's bounds hold.
CorePrice = (
    Annotated[Decimal, Field(strict=True, allow_inf_nan=False, ge=MIN_PRICE, lt=_CORE_MAX_PRICE)]
    | Annotated[int, Field(strict=True, ge=1, lt=10**15)]
)
CoreConfidence = (
    Annotated[Decimal, Field(strict=True, allow_inf_nan=False, ge=0, le=1)]
    | Annotated[int, Field(strict=True, ge=0, le=1)]
)


class CoreSignalIn(SignalIn):
    """SignalIn's common shape, validated by pydantic-core alone (see above)."""

    model_config = ConfigDict(title="CoreSignalIn")

    symbol: Annotated[str, StringConstraints(strict=True, pattern=SYMBOL_PATTERN, to_upper=True)]
    action: Literal["BUY", "SELL", "HOLD"]
    price: CorePrice  # type: ignore[assignment]  # the number as sent: new_signal stores its double
    confidence: CoreConfidence | None = None  # type: ignore[assignment]


class TradeIn(BaseModel):
    """A closed trade to record."""

    model_config = ConfigDict(extra="forbid", title="TradeIn")

    symbol: Symbol
    entry_price: TradeAmount
    exit_price: TradeAmount
    side: Side = Field(default="LONG", description="LONG or SHORT (case-insensitive)")
    # json_schema_extra: the document's default is the JSON number, not pydantic's "1"
    quantity: TradeAmount = Field(default=Decimal(1), json_schema_extra={"default": 1})
    fees: NonNegative = Field(default=Decimal(0), json_schema_extra={"default": 0})
    strategy: Text64 | None = None
    signal_id: BigId | None = None
    entry_time: Timestamp | None = Field(default=None, description="must not be after exit_time")
    exit_time: Timestamp | None = Field(default=None, description="default: now")
    client_id: ClientId | None = Field(default=None, description="idempotency key")
    metadata: Metadata | None = Field(default=None, description=METADATA_NOTE)


Since = Annotated[QueryTimestamp | None, Field(description="inclusive; not later than until")]
Until = Annotated[QueryTimestamp | None, Field(description="exclusive")]
PageLimit = Annotated[int, Field(ge=1, le=1000)]
Cursor = Annotated[
    str | None,
    Field(
        json_schema_extra={"pattern": "^[A-Za-z0-9_-]{22}$"},
        description="next_cursor of the previous page (any value of this shape is a position)",
    ),
]


class HistoryQuery(BaseModel):
    """Query string of GET /signals/history."""

    model_config = ConfigDict(extra="forbid", title="HistoryQuery")

    symbol: Symbol | None = None
    strategy: Text64 | None = None
    action: Action | None = None
    since: Since = None
    until: Until = None
    limit: PageLimit = 100
    cursor: Cursor = None


class TradesQuery(BaseModel):
    """Query string of GET /performance/trades (time filters apply to exit_time)."""

    model_config = ConfigDict(extra="forbid", title="TradesQuery")

    symbol: Symbol | None = None
    strategy: Text64 | None = None
    since: Since = None
    until: Until = None
    limit: PageLimit = 100
    cursor: Cursor = None


class StatsQuery(BaseModel):
    """Query string of GET /performance/stats (time filters apply to exit_time)."""

    model_config = ConfigDict(extra="forbid", title="StatsQuery")

    strategy: Text64 | None = None
    symbol: Symbol | None = None
    since: Since = None
    until: Until = None
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


class SaveSummary(BaseModel):
    """Answer to a save sent with `Prefer: return=minimal`: the stored ids, in request order."""

    model_config = ConfigDict(
        title="SaveSummary", json_schema_extra={"examples": [{"count": 2, "created": 1, "ids": [42, 7]}]}
    )

    count: int
    created: int = Field(description="rows new in this request (the rest had a known client_id)")
    ids: list[int] = Field(description="each item's stored id, in request order (a known client_id: its row's)")


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


class TradePage(BaseModel):
    """One page of closed trades, latest exit first."""

    model_config = ConfigDict(title="TradePage")

    trades: list[TradeOut]
    count: int
    next_cursor: str | None = Field(description="pass as cursor for the next page; null at the end")


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
