"""SQL shared by both backends: row values and answers, keyset filters and the statistics query."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from database_service.storage.base import GROUP_COLUMNS, SignalFilter, StatsAggregate, TradeFilter
from database_service.storage.rows import SIGNALS, TRADES, NewSignal, NewTrade, SqlType, Table

Convert = Callable[[int], Any]

# The statistics version (migration *_stats_version): raised in every new trade's transaction.
BUMP_STATS_VERSION = (
    "INSERT INTO stats_version (id, version) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET version = stats_version.version + 1"
)
READ_STATS_VERSION = "SELECT coalesce(max(version), 0) FROM stats_version"


def identity(value: Any) -> Any:
    """Return the value unchanged (a backend that needs no conversion)."""
    return value


def optional_float(value: Any) -> float | None:
    """float(value), keeping None."""
    # SQLite hands back REAL values that are whole numbers as int, e.g. from RETURNING.
    return None if value is None else float(value)


def _keep_none(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


@dataclass(frozen=True)
class Codec:
    """What differs between backends in the SQL they take and the values they store."""

    placeholder: str
    store_time: Convert
    store_number: Callable[[Decimal], Any]
    store_json: Callable[[dict[str, Any] | None], Any]
    read_time: Callable[[Any], str | None]
    read_json: Callable[[Any], dict[str, Any] | None]
    # Per table, built on first use: the (position, converter) of each column stored
    # converted, and the function building an answer from a row.
    _stores: dict[str, tuple[tuple[int, Callable[[Any], Any]], ...]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _answers: dict[str, Callable[[Sequence[Any]], dict[str, Any]]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def params(self, table: Table, item: NewSignal | NewTrade) -> tuple[Any, ...]:
        """The values of `item` for `table.fields`, in order, as this backend stores them."""
        stores = self._stores.get(table.name)
        if stores is None:
            every = [self._store(column.type) for column in table.columns]
            stores = self._stores[table.name] = tuple((i, f) for i, f in enumerate(every) if f is not identity)
        values = list(table.values(item))
        for i, store in stores:
            values[i] = store(values[i])
        return tuple(values)

    def answer(self, table: Table, row: Sequence[Any]) -> dict[str, Any]:
        """A row of `table.selected` as the API returns it."""
        build = self._answers.get(table.name)
        if build is None:
            build = self._answers[table.name] = self._answer_builder(table)
        return build(row)

    def _answer_builder(self, table: Table) -> Callable[[Sequence[Any]], dict[str, Any]]:
        """`lambda row: {"id": row[0], "price": f3(row[3]), ...}` for `table.selected`.

        Generated from the declaration, as dataclasses generate __init__: a history page
        builds one answer per row, and this is as fast as a dict written out by hand (a
        loop over the columns cost a 1000-row page about a fifth more). Only the names
        declared in rows.py go into the source, quoted by repr.
        """
        readers = [identity, *(self._read(column.type) for column in table.columns), self.read_time]
        items = ", ".join(
            f"{name!r}: row[{i}]" if read is identity else f"{name!r}: read{i}(row[{i}])"
            for i, (name, read) in enumerate(zip(table.answer_fields, readers, strict=True))
        )
        scope = {f"read{i}": read for i, read in enumerate(readers) if read is not identity}
        built: Callable[[Sequence[Any]], dict[str, Any]] = eval(f"lambda row: {{{items}}}", scope)  # noqa: S307
        return built

    def _store(self, kind: SqlType) -> Callable[[Any], Any]:
        if kind == "numeric":
            return identity if self.store_number is identity else _keep_none(self.store_number)
        if kind == "timestamptz":
            return _keep_none(self.store_time)
        return self.store_json if kind == "jsonb" else identity

    def _read(self, kind: SqlType) -> Callable[[Any], Any]:
        if kind in ("numeric", "float8"):
            return optional_float
        if kind == "timestamptz":
            return self.read_time
        return self.read_json if kind == "jsonb" else identity

    def signal_by_id(self) -> str:
        """SELECT of one signal by id."""
        return f"SELECT {SIGNALS.selected} FROM signals WHERE id = {self.placeholder} LIMIT 1"

    def trade_page(
        self, filters: TradeFilter, after: tuple[int, int] | None, limit: int
    ) -> tuple[str, list[Any]]:
        """SELECT of one keyset page of trades, latest exit first, with its parameters."""
        where, params = trade_page_where(filters, after, self.placeholder, self.store_time)
        order = f"ORDER BY exit_time DESC, id DESC LIMIT {self.placeholder}"
        return f"SELECT {TRADES.selected} FROM trades {where} {order}", [*params, limit]

    def signal_page(
        self, filters: SignalFilter, after: tuple[int, int] | None, limit: int
    ) -> tuple[str, list[Any]]:
        """SELECT of one keyset page of signals, newest first, with its parameters."""
        where, params = signal_where(filters, after, self.placeholder, self.store_time)
        order = f"ORDER BY ts DESC, id DESC LIMIT {self.placeholder}"
        return f"SELECT {SIGNALS.selected} FROM signals {where} {order}", [*params, limit]


def trade_page_where(
    filters: TradeFilter, after: tuple[int, int] | None, ph: str, conv: Convert
) -> tuple[str, list[Any]]:
    """WHERE clause for /performance/trades: the stats filters and a (exit_time, id) keyset."""
    where, params = trade_where(filters, ph, conv)
    if after is None:
        return where, params
    keyset = f"(exit_time, id) < ({ph}, {ph})"
    return (f"{where} AND {keyset}" if where else f"WHERE {keyset}"), [*params, conv(after[0]), after[1]]


def signal_where(
    filters: SignalFilter, after: tuple[int, int] | None, ph: str, conv: Convert
) -> tuple[str, list[Any]]:
    """WHERE clause for /signals/history; the row-value keyset condition uses the indexes."""
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("symbol", "strategy", "action"):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{column} = {ph}")
            params.append(value)
    _time_range(clauses, params, "ts", filters.since_us, filters.until_us, ph, conv)
    if after is not None:
        clauses.append(f"(ts, id) < ({ph}, {ph})")
        params.extend([conv(after[0]), after[1]])
    return _join(clauses), params


def trade_where(filters: TradeFilter, ph: str, conv: Convert) -> tuple[str, list[Any]]:
    """WHERE clause for /performance/stats (time filters apply to exit_time)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("symbol", "strategy"):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{column} = {ph}")
            params.append(value)
    _time_range(clauses, params, "exit_time", filters.since_us, filters.until_us, ph, conv)
    return _join(clauses), params


def _time_range(
    clauses: list[str],
    params: list[Any],
    column: str,
    since: int | None,
    until: int | None,
    ph: str,
    conv: Convert,
) -> None:
    if since is not None:
        clauses.append(f"{column} >= {ph}")
        params.append(conv(since))
    if until is not None:
        clauses.append(f"{column} < {ph}")
        params.append(conv(until))


def _join(clauses: list[str]) -> str:
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


def stats_query(
    filters: TradeFilter, group_by: str | None, ph: str, conv: Convert, dialect: str
) -> tuple[str, list[Any]]:
    """One statement: running sum and running peak (window functions), then aggregates."""
    where, params = trade_where(filters, ph, conv)
    key = GROUP_COLUMNS[group_by] if group_by else "NULL"
    partition = f"PARTITION BY {key} " if group_by else ""
    window = f"({partition}ORDER BY exit_time, id ROWS UNBOUNDED PRECEDING)"
    peak_window = f"({'PARTITION BY grp ' if group_by else ''}ORDER BY exit_time, id ROWS UNBOUNDED PRECEDING)"
    spread = "stddev_samp(pnl)" if dialect == "postgresql" else "sum(pnl * pnl)"
    greatest = "greatest" if dialect == "postgresql" else "max"
    group = "grp" if group_by else "NULL"
    query = f"""
        SELECT {group}, count(*),
               count(*) FILTER (WHERE pnl > 0), count(*) FILTER (WHERE pnl < 0),
               coalesce(sum(pnl), 0),
               coalesce(sum(pnl) FILTER (WHERE pnl > 0), 0),
               coalesce(sum(pnl) FILTER (WHERE pnl < 0), 0),
               max(pnl), min(pnl), {spread}, avg(duration_seconds),
               coalesce(max({greatest}(peak, 0) - cum), 0)
        FROM (
            SELECT grp, pnl, duration_seconds, cum, max(cum) OVER {peak_window} AS peak
            FROM (
                SELECT {key} AS grp, pnl, duration_seconds, exit_time, id,
                       sum(pnl) OVER {window} AS cum
                FROM trades {where}
            ) AS running
        ) AS peaks
        {"GROUP BY grp ORDER BY grp" if group_by else ""}
    """
    return query, params


def aggregate_from_row(row: Sequence[Any]) -> StatsAggregate:
    """Build a StatsAggregate from a PostgreSQL row (stddev computed by the database)."""
    return StatsAggregate(
        key=row[0],
        total=int(row[1]),
        wins=int(row[2]),
        losses=int(row[3]),
        total_pnl=float(row[4]),
        gross_profit=float(row[5]),
        gross_loss=float(row[6]),
        best=optional_float(row[7]),
        worst=optional_float(row[8]),
        stddev=optional_float(row[9]),
        avg_duration=optional_float(row[10]),
        max_drawdown=float(row[11]),
    )


def aggregate_from_sums(row: Sequence[Any]) -> StatsAggregate:
    """Build a StatsAggregate from a SQLite row, whose column 9 is the sum of squares."""
    values = list(row)
    values[9] = sample_stddev(int(row[1]), float(row[4]), optional_float(row[9]))
    return aggregate_from_row(values)


def sample_stddev(n: int, total: float, sum_squares: float | None) -> float | None:
    """Sample standard deviation from n, sum and sum of squares (None for n < 2)."""
    if n < 2 or sum_squares is None:
        return None
    mean = total / n
    variance = (sum_squares - n * mean * mean) / (n - 1)
    # Cancellation leaves a tiny residue when every value is equal: call that zero.
    if variance <= 1e-12 * max(1.0, sum_squares / n):
        return 0.0
    return math.sqrt(variance)


class SqlReads:
    """Signal reads both SQL backends run the same way (they differ only in `codec`)."""

    codec: Codec

    def _cursor(self) -> Any:  # provided by the backend: a context manager yielding a cursor
        raise NotImplementedError

    def _statement(self) -> Any:
        """A cursor for one statement; a backend may save the round trips of BEGIN and COMMIT."""
        return self._cursor()

    def get_signal(self, signal_id: int) -> dict[str, Any] | None:
        """One signal by id."""
        with self._statement() as cur:
            cur.execute(self.codec.signal_by_id(), (signal_id,))
            row = cur.fetchone()
        return self.codec.answer(SIGNALS, row) if row else None

    def signal_history(
        self, filters: SignalFilter, after: tuple[int, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Keyset page, newest first."""
        query, params = self.codec.signal_page(filters, after, limit)
        with self._statement() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        return [self.codec.answer(SIGNALS, row) for row in rows]

    def trade_history(
        self, filters: TradeFilter, after: tuple[int, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Keyset page of trades, latest exit first."""
        query, params = self.codec.trade_page(filters, after, limit)
        with self._statement() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        return [self.codec.answer(TRADES, row) for row in rows]
