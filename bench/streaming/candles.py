"""What candles cost websocket-streaming: CPU per aggTrade frame, and memory at the bound.

Run from the repository root:  .venv/bin/python bench/streaming/candles.py [--frames N]

- cost: aggTrade frames (5 symbols, consecutive ids) through `handle_frame` (parse + dedup +
  apply + candles at 1m, 5m, 1h) against the same with the candle step switched off, in one
  run, best of 3 each, interleaved; prints both rates and their ratio.
- memory: a builder filled to its bound (CANDLE_HISTORY 500 x 3 intervals x 5 symbols =
  7 500 candles), measured with tracemalloc.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from decimal import Decimal

from websocket_streaming import create_app, get_service
from websocket_streaming.candles import CandleBuilder, Trade

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
INTERVALS = ("1m", "5m", "1h")
HISTORY = 500


def frames(count: int) -> list[bytes]:
    """Combined-stream aggTrade frames round-robin over SYMBOLS, ids consecutive per symbol."""
    now = int(time.time() * 1000)
    made = []
    for i in range(count):
        symbol, agg_id = SYMBOLS[i % len(SYMBOLS)], i // len(SYMBOLS) + 1
        data = {"e": "aggTrade", "E": now + i, "s": symbol, "a": agg_id, "p": "90000.12345678"}
        data.update(q="0.00123000", f=agg_id, l=agg_id, T=now + i, m=True, M=True)
        made.append(json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data}).encode())
    return made


def rate(batch: list[bytes], candles: bool) -> float:
    """Frames per second through a fresh service's handle_frame."""
    config = {"TESTING": True, "REDIS_URL": None, "INGEST_ENABLED": False, "SYMBOLS": SYMBOLS}
    service = get_service(create_app({**config, "LOG_FORMAT": "text"}))
    for symbol in SYMBOLS:
        service.candles.builder.mark_before(symbol, 0)
    if not candles:
        service.candles.trade = lambda update: None  # type: ignore[method-assign]
    started = time.perf_counter()
    for frame in batch:
        service.handle_frame(frame, 0.0)
    return len(batch) / (time.perf_counter() - started)


def memory() -> tuple[int, float]:
    """(candles held, MiB traced) for a builder filled to its bound."""
    tracemalloc.start()
    builder = CandleBuilder(SYMBOLS, INTERVALS, HISTORY)
    start = 1_795_000_000_000 - 1_795_000_000_000 % 3_600_000
    for symbol in SYMBOLS:
        builder.mark_before(symbol, 0)
        for n in range(1, HISTORY * 60 + 1):  # a trade a minute for 500 hours: every interval full
            trade = Trade(symbol, n, Decimal("90000.12345678"), Decimal("0.00123"), start + n * 60_000, 2)
            builder.live(trade)
    builder.export(changed_only=True)  # what the SSE tick takes away each half second
    builder.prune()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return builder.held(), current / 2**20


def main() -> None:
    """Print both measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000)
    args = parser.parse_args()
    batch = frames(args.frames)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(3):
        for candles in (False, True):
            rates[candles].append(rate(batch, candles))
    without, with_candles = max(rates[False]), max(rates[True])
    print(f"aggTrade frames/s without candles {without:,.0f}, with candles (1m,5m,1h) {with_candles:,.0f}")
    print(
        f"ratio {with_candles / without:.2f}; candles cost {1e6 / with_candles - 1e6 / without:.1f} us a frame"
    )
    held, mib = memory()
    print(
        f"memory at the bound: {held} candles, {mib:.1f} MiB traced ({mib * 2**20 / held:.0f} bytes a candle)"
    )


if __name__ == "__main__":
    main()
