"""websocket-streaming fault storm: is /price fresh while the feed keeps breaking, with one
connection and with the A/B pair (WS_CONNECTIONS=2), and what does the second connection cost?

Run from the repository root:  .venv/bin/python bench/streaming/storm.py [--quick] [--phase P]

- single: 20 faults of mixed kinds in 2 minutes on the one connection, then one silence;
  /price sampled every 100 ms; recovery = time from a fault to the first sample showing a
  price received after it. Goals (issue 9, item 2): no non-200 after the first price;
  fresh again within 2 s of every fault, 5 s after a close 1008.
- ab: the same storm with WS_CONNECTIONS=2, each fault on one of the two connections (and
  silence among them); goal (item 6): no stale sample (age >= 1 s), no SSE event missing
  or repeated.
- cost: CPU per update with two connections against one: the service's worker CPU under
  gunicorn, both configurations fed by the same fake at once; and parse+dedup per frame
  in one process.

The service runs under gunicorn with the project's gunicorn.conf.py and production timings
(PRICE_STALE_SECONDS 10, backoff 0.5 s base), fed by the fake exchange (tools/fake-exchange) with numbered
trades at 100 per second. REST backfill is off, so every recovery is the WebSocket's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "fake-exchange"))

from fake_exchange import FakeExchange
from fake_exchange.drill import NumberedTrades, PriceSampler, SseReader
from run import SERVICE_DIR, Row, fresh_handlers, gunicorn, print_table, sample_frames

SYMBOLS = ("BTCUSDT", "ETHUSDT")
APP = "websocket_streaming:create_app()"
SINGLE_KINDS = ("drop", "close_1011", "garbage_burst", "close_1008", "close_1000", "server_shutdown")
AB_KINDS = (*SINGLE_KINDS, "silence")
STALE_SECONDS = 10.0  # the production default: the watchdog replaces a silent connection after it


@dataclass
class Strike:
    """One fault: what, on which connection, when (monotonic and epoch seconds)."""

    kind: str
    only: int | None
    at: float
    wall: float
    recovered: float | None = None


def service_env(fake: FakeExchange, connections: int) -> dict[str, str]:
    """Production settings, the fake's feed, numbered trades only, no REST backfill."""
    return {
        "BINANCE_WS_URL": fake.ws_url,
        "BINANCE_REST_URL": fake.rest_url,
        "SYMBOLS": ",".join(SYMBOLS),
        "WS_STREAMS": "trade",
        "WS_CONNECTIONS": str(connections),
        "WS_BACKFILL_ENABLED": "0",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PRICE": "1000000000",
        "RATE_LIMIT_STREAM": "100000",
        "SSE_MAX_STREAMS_PER_CLIENT": "10000",  # every subscriber comes from 127.0.0.1
    }


def get_json(url: str) -> dict:  # type: ignore[type-arg]
    """GET a JSON answer, whatever its status."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def delivering(base: str) -> int:
    """How many of the service's connections deliver, from /health."""
    detail = get_json(f"{base}/health")["checks"]["upstream"]["detail"]
    return sum(1 for line in detail.get("lines", []) if line["delivering"])


def wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` until true; exit with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"storm: timed out waiting for {what}")
        time.sleep(0.05)


def recovery(strike: Strike, sampler: PriceSampler) -> float | None:
    """Seconds from the fault to the first sample showing a price received after it."""
    for sample in sampler.samples:
        if (
            sample.at >= strike.at
            and sample.received_at is not None
            and sample.received_at / 1000 > strike.wall
        ):
            return sample.at - strike.at
    return None


# ---- the storms ----------------------------------------------------------------------
def storm(connections: int, faults: int, every: float) -> list[Row]:
    """Strike `faults` faults `every` s apart at a service with `connections` connections."""
    kinds = SINGLE_KINDS if connections == 1 else AB_KINDS
    with FakeExchange(rate=0) as fake, gunicorn(APP, service_env(fake, connections), SERVICE_DIR) as base:
        trades = NumberedTrades(fake, SYMBOLS, rate=100).start()
        wait(lambda: delivering(base) == connections, 20, "the connections")
        events = SseReader(base).start()
        subscribed = len(trades.sent)  # every update sent from now on must reach the subscriber
        sampler = PriceSampler(base, "BTCUSDT", interval=0.1).start()
        time.sleep(1.0)
        attempts_before, started = len(fake.connection_attempts), time.monotonic()
        strikes = []
        for n in range(faults):
            only = None if connections == 1 else (0, -1)[n % 2]  # the oldest, then the newest
            strikes.append(strike(fake, kinds[n % len(kinds)], only))
            pause = every if strikes[-1].kind != "silence" else STALE_SECONDS + 3  # let the watchdog act
            time.sleep(pause)
            if connections > 1:
                wait(lambda: delivering(base) == connections, 20, "both connections back")
        if connections == 1:  # silence last: only the watchdog ends it, after PRICE_STALE_SECONDS
            strikes.append(strike(fake, "silence", None))
            time.sleep(STALE_SECONDS + 3)
        duration = time.monotonic() - started
        attempts = len(fake.connection_attempts) - attempts_before
        received = events.wait_for(trades.stop())
        sampler.stop()
    for s in strikes:
        s.recovered = recovery(s, sampler)
    return storm_rows(
        connections, strikes, sampler, received, trades.sent[subscribed + 1 :], attempts, duration
    )


def strike(fake: FakeExchange, kind: str, only: int | None) -> Strike:
    """Inflict one fault now."""
    hit = Strike(kind, only, time.monotonic(), time.time())
    fake.fault(kind, only=only)
    return hit


def storm_rows(
    connections: int,
    strikes: list[Strike],
    sampler: PriceSampler,
    received: list[tuple[str, int]],
    sent: list[tuple[str, int]],
    attempts: int,
    duration: float,
) -> list[Row]:
    """The table rows of one storm."""
    ab = connections > 1
    name = "[A/B, each fault on one of the two]" if ab else "[one connection]"
    first_ok = next((s.at for s in sampler.samples if s.status == 200), float("inf"))
    non_200 = sum(1 for s in sampler.samples if s.at > first_ok and s.status != 200)
    stale_samples = sampler.stale(limit=1.0, after=first_ok)
    stale = len(stale_samples)
    silent = [(s.at, s.at + (s.recovered or 0)) for s in strikes if s.kind == "silence"]
    in_silence = sum(1 for x in stale_samples if any(a <= x.at <= b + 0.2 for a, b in silent))
    main = worst_of(strikes, exclude=("silence", "close_1008"))
    policy = worst_of(strikes, only=("close_1008",))
    counts = Counter(received)
    repeated = sum(1 for n in counts.values() if n > 1)
    missing = len(set(sent) - set(counts))
    per_5_min = attempts * 300 / duration
    rows = [
        Row(f"{name} faults struck", describe(strikes), "mixed kinds", None),
        Row(
            f"{name} non-200 /price samples after the first price",
            f"{non_200} of {len(sampler.samples)}",
            "0",
            non_200 == 0,
        ),
        Row(
            f"{name} recovery, worst / median (s), not 1008 or silence",
            f"{max(main):.2f} / {statistics.median(main):.2f}",
            "<= 2",
            max(main) <= 2,
        ),
        Row(f"{name} recovery after close 1008, worst (s)", f"{max(policy):.2f}", "<= 5", max(policy) <= 5),
        Row(
            f"{name} samples with age >= 1 s",
            f"{stale} ({in_silence} during a silence)",
            "0" if ab else "",
            stale == 0 if ab else None,
        ),
        Row(
            f"{name} SSE updates missing / repeated",
            f"{missing} / {repeated} of {len(sent)}",
            "0 / 0" if ab else "- / 0",
            (missing == 0 or not ab) and repeated == 0,
        ),
        Row(
            f"{name} connection attempts (per 5 min)",
            f"{attempts} in {duration:.0f} s ({per_5_min:.0f})",
            "<= 300",
            per_5_min <= 300,
        ),
    ]
    silence = worst_of(strikes, only=("silence",))
    limit = 2.0 if ab else STALE_SECONDS + 2
    goal = "<= 2" if ab else f"<= {limit:g} (the watchdog, PRICE_STALE_SECONDS)"
    rows.append(
        Row(f"{name} recovery after silence, worst (s)", f"{max(silence):.2f}", goal, max(silence) <= limit)
    )
    return rows


def worst_of(strikes: list[Strike], only: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[float]:
    """Recovery times of the chosen kinds (inf: never recovered); [nan] when none was struck."""
    times = [
        s.recovered if s.recovered is not None else float("inf")
        for s in strikes
        if (not only or s.kind in only) and s.kind not in exclude
    ]
    return times or [float("nan")]


def describe(strikes: list[Strike]) -> str:
    """`4 drop, 3 close_1011, ...`."""
    return ", ".join(f"{n} {kind}" for kind, n in Counter(s.kind for s in strikes).items())


# ---- what the second connection costs ------------------------------------------------
def cost(seconds: float, rounds: int) -> list[Row]:
    """Worker CPU per update, WS_CONNECTIONS=2 against 1, fed by the same fake at once."""
    env = {"SYMBOLS": "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT", "WS_STREAMS": "aggTrade,ticker"}
    with FakeExchange(rate=100) as fake:  # 100 events/s on each of the 10 streams
        one_env = {**service_env(fake, 1), **env}
        two_env = {**service_env(fake, 2), **env}
        with gunicorn(APP, one_env, SERVICE_DIR) as one, gunicorn(APP, two_env, SERVICE_DIR) as two:
            wait(lambda: delivering(one) == 1 and delivering(two) == 2, 30, "both services")
            time.sleep(1.0)
            per_update: dict[str, list[float]] = {"one": [], "two": []}
            for _ in range(rounds):
                cpu = (one.worker_cpu(), two.worker_cpu())
                applied = (frames(one), frames(two))
                time.sleep(seconds)
                updates = frames(one) - applied[0]  # every update, once: what one connection receives
                per_update["one"].append((one.worker_cpu() - cpu[0]) / updates)
                per_update["two"].append((two.worker_cpu() - cpu[1]) / updates)
                received_two = frames(two) - applied[1]
    ratios = sorted(b / a for a, b in zip(per_update["one"], per_update["two"], strict=True))
    one_us, two_us = (statistics.median(per_update[k]) * 1e6 for k in ("one", "two"))
    spread = f"{statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
    return [
        Row(
            f"worker CPU per update, one connection (us; median of {rounds} x {seconds:g} s)",
            f"{one_us:.1f}",
            "",
            None,
        ),
        Row("worker CPU per update, A/B (us; twice the frames, twins dropped)", f"{two_us:.1f}", "", None),
        Row("A/B / one connection, worker CPU per update", spread, "", None),
        Row("frames received per update, A/B (last round)", f"{received_two / updates:.2f}", "2", None),
        *parse_cost(),
    ]


def frames(base: str) -> int:
    """Frames the service received so far (/stats)."""
    return int(get_json(f"{base}/stats")["messages_total"])


def parse_cost(count: int = 60_000, rounds: int = 15) -> list[Row]:
    """In one process, one core: each update once, against each update from both connections.

    The frames are cut into `rounds` slices of new updates; each round measures the CPU
    time of one slice through a one-connection service and of the next through an A/B one
    (the order turns each round), so load from elsewhere hits both sides alike.
    """
    import os

    os.sched_setaffinity(0, {0})
    try:
        data = sample_frames(count)
        now = time.time()
        single, double = fresh_handlers(2)
        size = count // (2 * rounds)
        times: dict[str, list[float]] = {"one": [], "both": []}

        def one(chunk: list[bytes]) -> None:
            for frame in chunk:
                single(frame, now)

        def both(chunk: list[bytes]) -> None:
            for frame in chunk:  # A delivers it, then B's twin
                double(frame, now, 1)
                double(frame, now, 2)

        for n in range(rounds):
            chunks = data[2 * n * size : (2 * n + 1) * size], data[(2 * n + 1) * size : (2 * n + 2) * size]
            order = [("one", one, chunks[0]), ("both", both, chunks[1])]
            for name, run, chunk in order if n % 2 else reversed(order):
                started = time.thread_time()  # CPU time: a round the scheduler pauses costs nothing
                run(chunk)
                times[name].append((time.thread_time() - started) / size)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    ratios = sorted(b / a for a, b in zip(times["one"], times["both"], strict=True))
    one_us, both_us = (statistics.median(times[k]) * 1e6 for k in ("one", "both"))
    return [
        Row(
            f"one core: an update from one connection, parse+dedup+apply (us, median of {rounds})",
            f"{one_us:.2f}",
            "",
            None,
        ),
        Row("one core: an update from both, its byte-equal twin skipped (us)", f"{both_us:.2f}", "", None),
        Row(
            "one core: A/B / one connection, per update",
            f"{statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})",
            "",
            None,
        ),
    ]


def main() -> None:
    """Run the phases asked for and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 faults in one minute per storm")
    parser.add_argument("--phase", choices=("single", "ab", "cost", "all"), default="all")
    args = parser.parse_args()
    faults, every = (10, 6.0) if args.quick else (20, 6.0)
    rows: list[Row] = []
    if args.phase in ("single", "all"):
        rows += storm(1, faults, every)
    if args.phase in ("ab", "all"):
        rows += storm(2, faults, every)
    if args.phase in ("cost", "all"):
        rows += cost(3.0, 3 if args.quick else 5)
    print_table(rows)


if __name__ == "__main__":
    main()
