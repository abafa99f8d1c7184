"""PostgreSQL statistics from hourly trade buckets that combine like drawdown segments.

A segment of trades in exit order is summarised by its total S, its largest and smallest
prefix sums P >= 0 and m <= 0 (the empty prefix counts) and its internal drawdown D.
Segments A then B combine exactly: the drawdown inside B seen from the whole series is
max(D_B, peak_before_B - (cum_before_B + m_B)). Hours that lie wholly inside the requested
range come from trade_buckets; the partial hours at its edges are summarised from the
trades themselves with the same window functions.
"""

from __future__ import annotations

from typing import Any

from database_service.storage.base import TradeFilter, us_to_datetime

HOUR_US = 3_600_000_000
DIMENSIONS = {
    (): "all",
    ("strategy",): "strategy",
    ("symbol",): "symbol",
    ("strategy", "symbol"): "strategy_symbol",
}
KEY_EXPR = {"strategy": "coalesce(strategy, '')", "symbol": "symbol"}
SEGMENT_COLUMNS = (
    "n, wins, losses, total, gross_profit, gross_loss, best, worst, sumsq, dur_sum, dur_n, "
    "max_prefix, min_prefix, drawdown"
)


def segment_sql(keys: list[str], where: str, t0: str) -> str:
    """Summarise trades matching `where` into one segment per key tuple (exit order)."""
    key_list = ", ".join(f"{expr} AS k{i}" for i, expr in enumerate(keys)) or "0 AS k0"
    part = ", ".join(f"k{i}" for i in range(max(1, len(keys))))
    window = f"(PARTITION BY {part} ORDER BY exit_time, id ROWS UNBOUNDED PRECEDING)"
    raw_part = ", ".join(keys) or "0"
    raw_window = f"(PARTITION BY {raw_part} ORDER BY exit_time, id ROWS UNBOUNDED PRECEDING)"
    return f"""
        SELECT {part}, {t0} AS t0, count(*) AS n,
               count(*) FILTER (WHERE pnl > 0) AS wins, count(*) FILTER (WHERE pnl < 0) AS losses,
               sum(pnl) AS total, coalesce(sum(pnl) FILTER (WHERE pnl > 0), 0) AS gross_profit,
               coalesce(sum(pnl) FILTER (WHERE pnl < 0), 0) AS gross_loss,
               max(pnl) AS best, min(pnl) AS worst, sum(pnl * pnl) AS sumsq,
               coalesce(sum(duration_seconds), 0) AS dur_sum, count(duration_seconds) AS dur_n,
               greatest(0, max(cum)) AS max_prefix, least(0, min(cum)) AS min_prefix,
               greatest(0, max(greatest(peak, 0) - cum)) AS drawdown
        FROM (
            SELECT *, max(cum) OVER {window} AS peak
            FROM (
                SELECT {key_list}, pnl, duration_seconds, exit_time, id, sum(pnl) OVER {raw_window} AS cum
                FROM trades {where}
            ) AS running
        ) AS peaks
        GROUP BY {part}"""


def refresh_sql(dim: str, keys: tuple[str, ...]) -> str:
    """Recompute one bucket of one dimension from its trades (params: keys..., hour, hour)."""
    where = " AND ".join([*(f"{KEY_EXPR[k]} = %s" for k in keys), "exit_time >= %s", "exit_time < %s"])
    inner = segment_sql(["date_trunc('hour', exit_time)"], f"WHERE {where}", "k0")
    values = ", ".join(["%s"] * len(keys))
    columns = ", ".join(["dim", *keys, "bucket"])
    return f"""
        INSERT INTO trade_buckets ({columns}, {SEGMENT_COLUMNS})
        SELECT '{dim}', {values + ", " if keys else ""}t0, {SEGMENT_COLUMNS} FROM ({inner}) AS s
        ON CONFLICT (dim, strategy, symbol, bucket) DO UPDATE SET
        {", ".join(f"{c.strip()} = EXCLUDED.{c.strip()}" for c in SEGMENT_COLUMNS.split(","))}"""


def refresh_statements(strategy: str | None, symbol: str, hour_us: int) -> list[tuple[str, list[Any]]]:
    """The four bucket refreshes one new trade needs."""
    start, end = us_to_datetime(hour_us), us_to_datetime(hour_us + HOUR_US)
    values = {"strategy": strategy or "", "symbol": symbol}
    return [
        (refresh_sql(dim, keys), [*[values[k] for k in keys] * 2, start, end])
        for keys, dim in DIMENSIONS.items()
    ]


def rebuild_sql() -> list[str]:
    """Statements that rebuild every bucket from all trades (after a bulk load)."""
    statements = ["TRUNCATE trade_buckets"]
    for keys, dim in DIMENSIONS.items():
        exprs = ["date_trunc('hour', exit_time)", *(KEY_EXPR[k] for k in keys)]
        inner = segment_sql(exprs, "", "k0")
        key_cols = ", ".join(f"k{i + 1}" for i in range(len(keys)))
        columns = ", ".join(["dim", *keys, "bucket"])
        statements.append(
            f"INSERT INTO trade_buckets ({columns}, {SEGMENT_COLUMNS}) "
            f"SELECT '{dim}', {key_cols + ', ' if keys else ''}t0, {SEGMENT_COLUMNS} FROM ({inner}) AS s"
        )
    return statements


def _hour_ceil(us: int) -> int:
    return -(-us // HOUR_US) * HOUR_US


def _hour_floor(us: int) -> int:
    return us // HOUR_US * HOUR_US


def stats_sql(filters: TradeFilter, group_by: str | None) -> tuple[str, list[Any]]:
    """Statistics per group from whole-hour buckets plus the trades of the partial edge hours."""
    keys = tuple(k for k in ("strategy", "symbol") if getattr(filters, k) is not None or group_by == k)
    group = f"nullif({group_by}, '')" if group_by == "strategy" else (group_by or "NULL")
    segments, params = _bucket_segments(DIMENSIONS[keys], keys, filters, group)
    for low, high in _edges(filters):
        edge, edge_params = _raw_segment(filters, group_by, low, high)
        segments += f" UNION ALL {edge}"
        params += edge_params
    return _combine(segments, bool(group_by)), params


def _key_filters(
    filters: TradeFilter, keys: tuple[str, ...], exprs: dict[str, str]
) -> tuple[list[str], list[Any]]:
    clauses, params = [], []
    for key in keys:
        value = getattr(filters, key)
        if value is not None:
            clauses.append(f"{exprs[key]} = %s")
            params.append(value)
    return clauses, params


def _bucket_segments(
    dim: str, keys: tuple[str, ...], filters: TradeFilter, group: str
) -> tuple[str, list[Any]]:
    clauses, params = _key_filters(filters, keys, {"strategy": "strategy", "symbol": "symbol"})
    clauses.insert(0, "dim = %s")
    params.insert(0, dim)
    low, high = _inner_range(filters)
    if low is not None:
        clauses.append("bucket >= %s")
        params.append(us_to_datetime(low))
    if high is not None:
        clauses.append("bucket < %s")
        params.append(us_to_datetime(high))
    where = " AND ".join(clauses)
    return f"SELECT {group} AS grp, bucket AS t0, {SEGMENT_COLUMNS} FROM trade_buckets WHERE {where}", params


def _inner_range(filters: TradeFilter) -> tuple[int | None, int | None]:
    low = None if filters.since_us is None else _hour_ceil(filters.since_us)
    high = None if filters.until_us is None else _hour_floor(filters.until_us)
    if low is not None and high is not None and high < low:
        high = low  # the whole range lies inside one hour: no bucket, only raw trades
    return low, high


def _edges(filters: TradeFilter) -> list[tuple[int, int]]:
    low, high = _inner_range(filters)
    edges = []
    if filters.since_us is not None and low is not None and filters.since_us < low:
        edges.append((filters.since_us, low if filters.until_us is None else min(low, filters.until_us)))
    if filters.until_us is not None and high is not None and high < filters.until_us:
        start = high if filters.since_us is None else max(high, filters.since_us)
        if not edges or start >= edges[0][1]:
            edges.append((start, filters.until_us))
    return [(a, b) for a, b in edges if a < b]


def _raw_segment(filters: TradeFilter, group_by: str | None, low: int, high: int) -> tuple[str, list[Any]]:
    keys = [KEY_EXPR[group_by]] if group_by else []
    clauses, params = _key_filters(
        filters, ("strategy", "symbol"), {"strategy": "strategy", "symbol": "symbol"}
    )
    clauses += ["exit_time >= %s", "exit_time < %s"]
    params += [us_to_datetime(low), us_to_datetime(high)]
    inner = segment_sql(keys, "WHERE " + " AND ".join(clauses), "%s")
    group = ("nullif(k0, '')" if group_by == "strategy" else "k0") if group_by else "NULL"
    sql = f"SELECT {group} AS grp, t0, {SEGMENT_COLUMNS} FROM ({inner}) AS e"
    # t0 placeholder comes first in the inner SELECT list
    return sql, [us_to_datetime(low), *params]


def _combine(segments: str, grouped: bool) -> str:
    prev = "(PARTITION BY grp ORDER BY t0 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    return f"""
        SELECT {"grp" if grouped else "NULL"}, coalesce(sum(n), 0), coalesce(sum(wins), 0),
               coalesce(sum(losses), 0), coalesce(sum(total), 0), coalesce(sum(gross_profit), 0),
               coalesce(sum(gross_loss), 0), max(best), min(worst),
               CASE WHEN sum(n) > 1 THEN sqrt(greatest(0,
                   (sum(sumsq) - sum(total) * sum(total) / sum(n)) / (sum(n) - 1))) END,
               sum(dur_sum) / nullif(sum(dur_n), 0),
               coalesce(max(greatest(drawdown, peak_before - (cum_before + min_prefix))), 0)
        FROM (
            SELECT *, greatest(0, coalesce(max(cum_before + max_prefix) OVER {prev}, 0)) AS peak_before
            FROM (
                SELECT *, coalesce(sum(total) OVER {prev}, 0) AS cum_before
                FROM ({segments}) AS segments
            ) AS with_cum
        ) AS with_peak
        {"GROUP BY grp ORDER BY grp" if grouped else ""}"""


def bucket_hour(exit_us: int) -> int:
    """The start of the hour holding exit_us."""
    return _hour_floor(exit_us)
