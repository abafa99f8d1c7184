"""Turn the database's aggregates into the statistics docs/design.md defines."""

from __future__ import annotations

import math
from typing import Any

from database_service.storage import StatsAggregate

DIGITS = 10  # round away binary noise such as 0.30000000000000004


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def finalize(agg: StatsAggregate) -> dict[str, Any]:
    """The statistics of one group; ratios are null where they are undefined."""
    n = agg.total
    average_win = _ratio(agg.gross_profit, agg.wins)
    average_loss = _ratio(agg.gross_loss, agg.losses)
    win_rate = _ratio(agg.wins, n)
    expectancy = None
    if n:
        loss_rate = agg.losses / n
        expectancy = agg.wins / n * (average_win or 0.0) - loss_rate * abs(average_loss or 0.0)
    values = {
        "total_trades": n,
        "wins": agg.wins,
        "losses": agg.losses,
        "breakeven": n - agg.wins - agg.losses,
        "win_rate": win_rate,
        "total_pnl": agg.total_pnl,
        "average_pnl": _ratio(agg.total_pnl, n),
        "average_win": average_win,
        "average_loss": average_loss,
        "profit_factor": _ratio(agg.gross_profit, abs(agg.gross_loss)) if agg.losses else None,
        "expectancy": expectancy,
        "max_drawdown": agg.max_drawdown,
        "sqn": sqn(n, agg.total_pnl, agg.stddev),
        "best_trade": agg.best,
        "worst_trade": agg.worst,
        "average_duration_seconds": agg.avg_duration,
    }
    return {k: _round(v) if isinstance(v, float) else v for k, v in values.items()}


def sqn(n: int, total: float, stddev: float | None) -> float | None:
    """System Quality Number: sqrt(n) * mean / sample stddev; null for n < 2 or zero spread."""
    if n < 2 or not stddev:
        return None
    return math.sqrt(n) * (total / n) / stddev


def empty() -> dict[str, Any]:
    """Statistics of no trades at all."""
    return finalize(StatsAggregate(None, 0, 0, 0, 0.0, 0.0, 0.0, None, None, None, None, 0.0))
