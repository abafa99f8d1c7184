"""Each stored row, declared once: its columns, their SQL types and the answer's field names.

Both backends derive from these declarations every column list they send (INSERT, COPY,
SELECT, RETURNING), the parameters of a row, the casts of PostgreSQL's one-statement save
and the answer dict of a stored row. Adding an optional column takes its migrations, the
request and answer models (models.py), and a field here plus its Column.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

# PostgreSQL's name of each column type; SQLite stores them as TEXT, REAL, INTEGER and JSON text.
SqlType = Literal["text", "numeric", "float8", "bigint", "timestamptz", "jsonb"]


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, which
# cost a batch of 1000 signals 0.7 ms, a tenth of its time in Python.
@dataclass(slots=True)
class NewSignal:
    """A validated signal ready to be stored (times are UTC epoch microseconds, price a double)."""

    symbol: str
    action: str
    price: float  # the stored numeric is this double's shortest decimal (repr)
    ts_us: int
    confidence: float | None = None
    strategy: str | None = None
    timeframe: str | None = None
    metadata: dict[str, Any] | None = None
    client_id: str | None = None


@dataclass(slots=True)
class NewTrade:
    """A validated closed trade with its computed fields."""

    symbol: str
    side: str
    entry_price: Decimal
    exit_price: Decimal
    quantity: Decimal
    fees: Decimal
    pnl: Decimal
    pnl_percent: float
    outcome: str
    exit_us: int
    entry_us: int | None = None
    duration_seconds: float | None = None
    strategy: str | None = None
    signal_id: int | None = None
    metadata: dict[str, Any] | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class Column:
    """One stored column: SQL name and type, the New* attribute it stores, the answer's field.

    `clock`: omitted in a request, the server's clock fills it (an idempotent repeat is
    compared on it only when it sends it).
    """

    name: str
    type: SqlType
    attr: str = ""  # default: name
    answer: str = ""  # default: name
    clock: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "attr", self.attr or self.name)
        object.__setattr__(self, "answer", self.answer or self.name)


@dataclass(frozen=True)
class Table:
    """A time-series table: its columns after `id` (insert order), and its idempotency-key table.

    Every table also has `id` first and `created_at` (set by the database) last; the key
    table holds (client_id, `key_id`, `time`), `time` being the row's partitioning column.
    """

    name: str
    columns: tuple[Column, ...]
    keys: str
    key_id: str
    time: str

    @cached_property
    def fields(self) -> str:
        """The inserted columns, comma-separated (after id)."""
        return ", ".join(c.name for c in self.columns)

    @cached_property
    def selected(self) -> str:
        """What a read selects and an insert returns: id, the columns, created_at."""
        return f"id, {self.fields}, created_at"

    @cached_property
    def answer_fields(self) -> tuple[str, ...]:
        """The answer's field names, in the order of `selected`."""
        return ("id", *(c.answer for c in self.columns), "created_at")

    @cached_property
    def time_index(self) -> int:
        """Position of the partitioning time column among `columns`."""
        return next(i for i, c in enumerate(self.columns) if c.name == self.time)

    @cached_property
    def time_us(self) -> Callable[[Any], int]:
        """A function giving a New* row's partitioning time, in epoch microseconds."""
        return operator.attrgetter(self.columns[self.time_index].attr)

    @cached_property
    def values(self) -> Callable[[Any], tuple[Any, ...]]:
        """A function giving a New* row's values for `columns`, in order."""
        return operator.attrgetter(*(c.attr for c in self.columns))


SIGNALS = Table(
    "signals",
    (
        Column("symbol", "text"),
        Column("action", "text"),
        Column("price", "numeric"),
        Column("confidence", "float8"),
        Column("strategy", "text"),
        Column("timeframe", "text"),
        Column("ts", "timestamptz", attr="ts_us", answer="timestamp", clock=True),
        Column("metadata", "jsonb"),
        Column("client_id", "text"),
    ),
    keys="signal_client_ids",
    key_id="signal_id",
    time="ts",
)
TRADES = Table(
    "trades",
    (
        Column("symbol", "text"),
        Column("side", "text"),
        Column("entry_price", "numeric"),
        Column("exit_price", "numeric"),
        Column("quantity", "numeric"),
        Column("fees", "numeric"),
        Column("pnl", "numeric"),
        Column("pnl_percent", "float8"),
        Column("outcome", "text"),
        Column("strategy", "text"),
        Column("signal_id", "bigint"),
        Column("entry_time", "timestamptz", attr="entry_us"),
        Column("exit_time", "timestamptz", attr="exit_us", clock=True),
        Column("duration_seconds", "float8"),
        Column("metadata", "jsonb"),
        Column("client_id", "text"),
    ),
    keys="trade_client_ids",
    key_id="trade_id",
    time="exit_time",
)
