"""Bulk-load synthetic signals and trades into PostgreSQL with COPY."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg2

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
STRATEGIES = tuple(f"strategy_{i}" for i in range(10))
ACTIONS = ("BUY", "SELL", "HOLD")
START = datetime(2025, 1, 1, tzinfo=UTC)
CHUNK = 100_000


def _signal_lines(rng: random.Random, start: int, count: int, total: int, span_s: int) -> Iterator[str]:
    for i in range(start, start + count):
        ts = START + timedelta(seconds=span_s * i / total, microseconds=rng.randrange(1000))
        meta = "\\N" if i % 4 else json.dumps({"rsi": round(rng.uniform(0, 100), 2)})
        yield "\t".join(
            (
                SYMBOLS[i % len(SYMBOLS)],
                ACTIONS[rng.randrange(3)],
                f"{rng.uniform(0.1, 90000):.4f}",
                f"{rng.random():.3f}",
                STRATEGIES[rng.randrange(len(STRATEGIES))],
                "1h",
                ts.isoformat(),
                meta,
            )
        )


def _trade_lines(rng: random.Random, start: int, count: int, total: int, span_s: int) -> Iterator[str]:
    for i in range(start, start + count):
        exit_time = START + timedelta(seconds=span_s * i / total)
        entry_time = exit_time - timedelta(seconds=rng.randrange(60, 86_400))
        entry = round(rng.uniform(10, 1000), 4)
        exit_ = round(entry * rng.uniform(0.95, 1.05), 4)
        quantity, fees = rng.choice((1, 2, 0.5)), round(rng.uniform(0, 0.5), 4)
        side = "LONG" if i % 3 else "SHORT"
        pnl = round(((exit_ - entry) if side == "LONG" else (entry - exit_)) * quantity - fees, 8)
        outcome = "win" if pnl > 0 else "loss" if pnl < 0 else "breakeven"
        yield "\t".join(
            map(
                str,
                (
                    SYMBOLS[i % len(SYMBOLS)],
                    side,
                    entry,
                    exit_,
                    quantity,
                    fees,
                    pnl,
                    pnl / (entry * quantity) * 100,
                    outcome,
                    STRATEGIES[rng.randrange(len(STRATEGIES))],
                    entry_time.isoformat(),
                    exit_time.isoformat(),
                    (exit_time - entry_time).total_seconds(),
                ),
            )
        )


def _copy(conn: psycopg2.extensions.connection, table: str, columns: str, lines: Iterator[str]) -> None:
    buffer = io.StringIO("\n".join(lines) + "\n")
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)


def load(url: str, rows: int, seed: int = 7) -> None:
    """COPY `rows` signals and `rows` trades in chunks, then ANALYZE."""
    rng = random.Random(seed)
    span = 365 * 86_400
    conn = psycopg2.connect(url)
    try:
        for start in range(0, rows, CHUNK):
            count = min(CHUNK, rows - start)
            _copy(
                conn,
                "signals",
                "symbol, action, price, confidence, strategy, timeframe, ts, metadata",
                _signal_lines(rng, start, count, rows, span),
            )
            _copy(
                conn,
                "trades",
                "symbol, side, entry_price, exit_price, quantity, fees, pnl, "
                "pnl_percent, outcome, strategy, entry_time, exit_time, duration_seconds",
                _trade_lines(rng, start, count, rows, span),
            )
            conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE signals")
            cur.execute("VACUUM ANALYZE trades")
    finally:
        conn.close()
