"""What measuring latency from the exchange costs on the hot paths, side by side in one run.

Run from the repository root:  .venv/bin/python bench/streaming/latency_cost.py [--quick]

- ingest: frames per second through `handle_frame` with the latency tracker on, and with
  its `received` replaced by a no-op (the code before the measurement); nine rounds in
  alternating order, each on a fresh service. Goal: ratio >= 0.95.
- /price: answers per second through the Flask test client, tracker on against its
  `answered` a no-op. Goal: ratio >= 0.95.
Both on one core; the figures are ratios within this run, never absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from run import SYMBOLS, Row, print_table, sample_frames


def _service(track: bool) -> object:
    from websocket_streaming import create_app, get_service

    config = {"INGEST_ENABLED": False, "SYMBOLS": SYMBOLS, "REDIS_URL": None, "LOG_LEVEL": "WARNING"}
    app = create_app(config)
    service = get_service(app)
    if not track:
        service.latency.received = lambda *args: None  # type: ignore[method-assign]
        service.latency.answered = lambda *args: None  # type: ignore[method-assign]
    return app, service


def _ingest_rate(track: bool, frames: list[bytes]) -> float:
    _app, service = _service(track)
    handle: Callable[[bytes, float], object] = service.handle_frame  # type: ignore[attr-defined]
    started = time.perf_counter()
    for frame in frames:
        handle(frame, time.time())
    return len(frames) / (time.perf_counter() - started)


def _price_rate(track: bool, frames: list[bytes], answers: int) -> float:
    app, service = _service(track)
    for frame in frames[:200]:
        service.handle_frame(frame, time.time())  # type: ignore[attr-defined]
    client = app.test_client()  # type: ignore[attr-defined]
    client.get(f"/price/{SYMBOLS[0]}")  # the first request starts the (idle) service
    started = time.perf_counter()
    for i in range(answers):
        client.get(f"/price/{SYMBOLS[i % len(SYMBOLS)]}")
    return answers / (time.perf_counter() - started)


def _ratio(measure: Callable[[bool], float], rounds: int) -> tuple[float, float, float]:
    """Median of per-round ratios (on / off), and their spread; the order alternates."""
    ratios = []
    for index in range(rounds):
        if index % 2:
            on, off = measure(True), measure(False)
        else:
            off, on = measure(False), measure(True)
        ratios.append(on / off)
    return statistics.median(ratios), min(ratios), max(ratios)


def main() -> None:
    """Measure both paths and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller samples")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    frames = sample_frames(5_000 if args.quick else 20_000)
    rounds = 5 if args.quick else 9
    answers = 1_000 if args.quick else 3_000
    rows = []
    for name, measure in (
        ("handle_frame, tracker on / off", lambda track: _ingest_rate(track, frames)),
        ("/price, tracker on / off", lambda track: _price_rate(track, frames, answers)),
    ):
        median, low, high = _ratio(measure, rounds)
        rows.append(Row(name, f"{median:.3f} ({low:.3f}-{high:.3f})", ">= 0.95", median >= 0.95))
    print_table(rows)


if __name__ == "__main__":
    main()
