"""The naive baseline: every trade into Python, statistics computed there."""

from __future__ import annotations

import math
from typing import Any

import psycopg2


def naive_stats(url: str) -> dict[str, Any]:
    """Fetch all trades and compute the same statistics in Python."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pnl, duration_seconds, exit_time, id FROM trades")
            trades = cur.fetchall()
    finally:
        conn.close()
    trades.sort(key=lambda t: (t[2], t[3]))
    pnls = [float(t[0]) for t in trades]
    return _summarise(pnls, [t[1] for t in trades if t[1] is not None])


def _summarise(pnls: list[float], durations: list[float]) -> dict[str, Any]:
    n = len(pnls)
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    total = sum(pnls)
    peak = cumulative = drawdown = 0.0
    for p in pnls:
        cumulative += p
        peak = max(peak, cumulative)
        drawdown = max(drawdown, peak - cumulative)
    mean = total / n
    std = math.sqrt(sum((p - mean) ** 2 for p in pnls) / (n - 1))
    return {
        "total_trades": n,
        "win_rate": len(wins) / n,
        "total_pnl": total,
        "profit_factor": sum(wins) / abs(sum(losses)),
        "max_drawdown": drawdown,
        "sqn": math.sqrt(n) * mean / std,
        "average_duration_seconds": sum(durations) / len(durations),
    }
