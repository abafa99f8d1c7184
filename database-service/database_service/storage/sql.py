"""SQL shared by both backends: keyset filters and the statistics query."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from database_service.storage.base import (
    GROUP_COLUMNS,
    SignalFilter,
    StatsAggregate,
    TradeFilter,
)

Convert = Callable[[int], Any]


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


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


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
        best=_float(row[7]),
        worst=_float(row[8]),
        stddev=_float(row[9]),
        avg_duration=_float(row[10]),
        max_drawdown=float(row[11]),
    )


def aggregate_from_sums(row: Sequence[Any]) -> StatsAggregate:
    """Build a StatsAggregate from a SQLite row, whose column 9 is the sum of squares."""
    values = list(row)
    values[9] = sample_stddev(int(row[1]), float(row[4]), _float(row[9]))
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
