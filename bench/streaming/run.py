"""websocket-streaming benchmark: ingest throughput, feed-to-/price delay, /price vs bare Flask
under the same gunicorn settings, and SSE fan-out delay with 200 subscribers.

Run from the repository root:  .venv/bin/python bench/streaming/run.py  [--quick]
"""

from __future__ import annotations

import argparse
import gc
import http.client
import itertools
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "fake-exchange"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))  # sardag_testing

from fake_exchange import trade_event
from sardag_testing import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "websocket-streaming"
GUNICORN_CONF = SERVICE_DIR / "gunicorn.conf.py"
BIN = Path(sys.executable).parent
LOG_DIR = ROOT / "bench" / "results" / "streaming"  # git-ignored; server logs of the last run
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
# Every trade the benchmark sends gets a new id: the service drops a trade whose id it has
# seen already (the twin a second connection delivers).
TRADE_IDS = itertools.count(1)


@dataclass
class Row:
    """One line of the result table."""

    name: str
    value: str
    goal: str
    ok: bool | None


# ---- 1. parse-and-apply throughput -------------------------------------------------------
def sample_frames(count: int) -> list[bytes]:
    """A realistic mix of combined-stream frames: aggTrade, ticker and bookTicker."""
    from fake_exchange import Market

    market = Market(SYMBOLS, seed=7)
    frames = []
    now = int(time.time() * 1000)
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        market.step(symbol)
        kind = ("aggTrade", "aggTrade", "ticker", "bookTicker")[i % 4]
        stream = f"{symbol.lower()}@{kind}"
        payload = market.payload(stream, now + i)
        frames.append(json.dumps({"stream": stream, "data": payload}, separators=(",", ":")).encode())
    return frames


def best_rate(run: Callable[[], None], count: int, repeats: int = 3) -> float:
    """Items per CPU second of the fastest of `repeats` runs (the thread's CPU time: on a
    shared machine, time the scheduler gives to others does not count; on a quiet one it
    equals the wall time)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()  # the last run's garbage (a whole service, its ring) is not this run's to collect
        started = time.thread_time()
        run()
        best = min(best, time.thread_time() - started)
    return count / best


def fresh_handlers(count: int) -> Iterator[Callable[..., str | None]]:
    """`handle_frame` of `count` new services, one per timed run: a service that has seen a
    frame drops its copy without applying it, so a second run on the same one measures less."""
    from websocket_streaming import create_app, get_service

    config = {"INGEST_ENABLED": False, "SYMBOLS": SYMBOLS, "REDIS_URL": None, "LOG_LEVEL": "WARNING"}
    handlers = [get_service(create_app(config)).handle_frame for _ in range(count)]
    while handlers:
        yield handlers.pop(0)  # made before the timed runs; each one let go after its run


def bench_parse(count: int, repeats: int = 3) -> list[Row]:
    """Messages/s through handle_frame (parse + dedup + apply + counters) and json.loads alone."""
    os.sched_setaffinity(0, {0})  # one core
    try:
        handlers = fresh_handlers(repeats)
        frames = sample_frames(count)
        now = time.time()

        def parse_apply() -> None:
            handle = next(handlers)
            for frame in frames:
                handle(frame, now)

        def json_only() -> None:
            for frame in frames:
                json.loads(frame)

        full = best_rate(parse_apply, count, repeats)
        ceiling = best_rate(json_only, count, repeats)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return [
        Row("parse+apply, one core (msg/s)", f"{full:,.0f}", ">= 100,000", full >= 100_000),
        Row("json.loads alone, same frames (msg/s)", f"{ceiling:,.0f}", "ceiling", None),
    ]


# ---- 1b. bookTicker: the busiest stream ------------------------------------------------------
BOOK_TICKER_PEAK = 300  # bookTicker updates/s per symbol at a major pair's peak (order of magnitude)


def book_ticker_frames(count: int) -> list[bytes]:
    """`count` combined-stream bookTicker frames round-robin over SYMBOLS, `u` rising."""
    from fake_exchange import Market

    market = Market(SYMBOLS, seed=11)
    frames = []
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        market.step(symbol)
        stream = f"{symbol.lower()}@bookTicker"
        payload = market.book_ticker(symbol, 0, 10_000_000 + i)
        frames.append(json.dumps({"stream": stream, "data": payload}, separators=(",", ":")).encode())
    return frames


def bench_book_ticker(count: int, repeats: int = 3) -> list[Row]:
    """bookTicker through handle_frame (parse + dedup + apply) vs json.loads of the same frames,
    on one line and on the A/B pair (every frame twice), and the CPU share of one worker at
    the peak rate; beside them, in the same run, the limits of the path (`decode_floor`).
    The service's path for these frames is parser.fast_quote, then UpdateFilter.admit_quote
    and PriceBook.apply_quote (the general parse for any other frame)."""
    os.sched_setaffinity(0, {0})
    try:
        frames = book_ticker_frames(count)
        now = time.time()
        one, pair = fresh_handlers(repeats), fresh_handlers(repeats)
        no_gc, start_frozen = fresh_handlers(repeats), fresh_handlers(repeats)

        def one_line() -> None:
            handle = next(one)
            for frame in frames:
                handle(frame, now)

        def two_lines() -> None:
            handle = next(pair)
            for frame in frames:
                handle(frame, now, 1)
                handle(frame, now, 2)

        def without_gc() -> None:
            handle = next(no_gc)
            gc.disable()
            try:
                for frame in frames:
                    handle(frame, now)
            finally:
                gc.enable()

        def frozen() -> None:
            handle = next(start_frozen)
            gc.freeze()  # what a worker could do once started: its modules and app left out of collections
            try:
                for frame in frames:
                    handle(frame, now)
            finally:
                gc.unfreeze()

        def json_only() -> None:
            for frame in frames:
                json.loads(frame)

        full = best_rate(one_line, count, repeats)
        both = best_rate(two_lines, count, repeats)  # unique updates per CPU second
        ceiling = best_rate(json_only, count, repeats)
        floors = [(name, best_rate(run, count, repeats)) for name, run in decode_floor(frames)]
        floors.append(("handle_frame with the cyclic GC off", best_rate(without_gc, count, repeats)))
        floors.append(
            ("handle_frame, objects made before it frozen (gc.freeze)", best_rate(frozen, count, repeats))
        )
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    peak = BOOK_TICKER_PEAK * len(SYMBOLS)
    ratio = full / ceiling
    return [
        Row("bookTicker parse+dedup+apply, one core (msg/s)", f"{full:,.0f}", "", None),
        Row("json.loads alone, same bookTicker frames (msg/s)", f"{ceiling:,.0f}", "baseline", None),
        Row("bookTicker handle_frame / json.loads", f"{ratio:.2f}", ">= 0.6", ratio >= 0.6),
        *(Row(f"  limit: {name} / json.loads", f"{rate / ceiling:.2f}", "", None) for name, rate in floors),
        Row(
            f"CPU share of one worker at {peak:,} bookTicker/s, A/B lines (%)",
            f"{100 * peak / both:.1f}",
            "",
            None,
        ),
    ]


def decode_floor(frames: list[bytes]) -> list[tuple[str, Callable[[], None]]]:
    """What a bookTicker path cannot go below, step by step: orjson's decode; plus reading the
    six fields (a bare dict walk); plus the four exact Decimals and their range checks. And
    the decoder the service uses: msgspec into the bookTicker struct, then `fast_quote` (that
    plus the check that the symbol and the four decimals are exact text, no Decimal made)."""
    from decimal import Decimal

    import msgspec
    import orjson
    from websocket_streaming.parser import BookTickerFrame, fast_quote

    zero, infinity, most = Decimal(0), Decimal("Infinity"), Decimal("1e15")

    def decode() -> None:
        for frame in frames:
            orjson.loads(frame)

    def walk() -> None:
        for frame in frames:
            e = orjson.loads(frame)["data"]
            e["s"], e["u"], e["b"], e["B"], e["a"], e["A"]

    def exact() -> None:
        for frame in frames:
            e = orjson.loads(frame)["data"]
            e["s"], e["u"]
            bid, bid_qty, ask, ask_qty = Decimal(e["b"]), Decimal(e["B"]), Decimal(e["a"]), Decimal(e["A"])
            if not (
                zero < bid < infinity and zero < ask < infinity and zero <= bid_qty <= most >= ask_qty >= zero
            ):
                raise SystemExit("the benchmark's frames hold an unsound quote")

    typed = msgspec.json.Decoder(BookTickerFrame).decode

    def struct() -> None:
        for frame in frames:
            typed(frame)

    def checked() -> None:
        for frame in frames:
            if fast_quote(frame) is None:
                raise SystemExit("the benchmark's frames left the fast path")

    return [
        ("orjson.loads alone", decode),
        ("orjson + the six fields read (bare dict walk)", walk),
        ("the same + four exact Decimals, range-checked", exact),
        ("msgspec into the bookTicker struct alone", struct),
        ("fast_quote: the same + symbol and four decimals checked as exact text", checked),
    ]


# ---- gunicorn helpers ------------------------------------------------------------------------
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerURL(str):
    """A server's base URL that also knows the gunicorn master's pid."""

    master_pid: int

    def worker_cpu(self) -> float:
        """CPU seconds used so far by the server's live workers."""
        task = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        total = 0
        for pid in task.read_text().split():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS


@contextmanager
def gunicorn(app_spec: str, env: dict[str, str], cwd: Path) -> Iterator[ServerURL]:
    """Run `app_spec` under websocket-streaming's gunicorn.conf.py; yields the base URL."""
    port = free_port()
    metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    full_env = {
        **os.environ,
        "PORT": str(port),
        "BIND": "127.0.0.1",
        "REDIS_URL": "",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        **env,
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"gunicorn-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(GUNICORN_CONF), app_spec],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = ServerURL(f"http://127.0.0.1:{port}")
    base.master_pid = proc.pid
    try:
        wait_http(base, proc, str(log))
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def wait_http(base: str, proc: subprocess.Popen[bytes], log: str) -> None:
    """Wait until the server accepts connections."""
    port = int(base.rsplit(":", 1)[1])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited; see {log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gunicorn did not start; see {log}")


def service_env(fake_ws: str, fake_rest: str) -> dict[str, str]:
    """The service's environment: production defaults but the fake feed, limits raised."""
    return {
        "BINANCE_WS_URL": fake_ws,
        "BINANCE_REST_URL": fake_rest,
        "SYMBOLS": ",".join(SYMBOLS),
        "WS_STREAMS": "trade",
        "RATE_LIMIT_PRICE": "1000000000",
        "RATE_LIMIT_STREAM": "100000",
        "SSE_MAX_STREAMS_PER_CLIENT": "10000",  # every subscriber comes from 127.0.0.1
        # The benchmark trades a few symbols only: the others' streams would be healed as
        # silent (a reconnect of the lines) in the middle of a measurement.
        "WS_STREAM_SILENCE_SECONDS": "86400",
    }


def p99(values: list[float]) -> float:
    """The 99th percentile."""
    return statistics.quantiles(values, n=100)[98]


# ---- 2. feed-to-/price delay -------------------------------------------------------------
def bench_delay(fake, base: str, samples: int) -> list[Row]:  # type: ignore[no-untyped-def]
    """Send a trade with a fresh price, poll /price until it shows it; p50/p99 of that."""
    port = int(base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    delays = []
    for i in range(samples):
        price = f"{60000 + i}.25"
        started = time.perf_counter()
        fake.send(trade_event("BTCUSDT", price, next(TRADE_IDS)), stream="btcusdt@trade")
        while True:
            conn.request("GET", "/price/BTCUSDT")
            body = conn.getresponse().read()
            if f'"price":{price},'.encode() in body:
                break
        delays.append((time.perf_counter() - started) * 1000)
        time.sleep(random.uniform(0.005, 0.02))
    worst = p99(delays)
    return [
        Row("feed send -> /price shows it, p99 (ms)", f"{worst:.2f}", "<= 5", worst <= 5),
        Row("feed send -> /price shows it, p50 (ms)", f"{statistics.median(delays):.2f}", "", None),
    ]


# ---- 3. /price vs bare Flask -------------------------------------------------------------
def ensure_wrk() -> str | None:
    """The wrk binary, installing it with apt when possible; None to fall back to Python."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "wrk"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return shutil.which("wrk")


def load(url: str, seconds: float, wrk: str | None) -> float:
    """Requests per second against `url` (wrk, or a threaded keep-alive Python client)."""
    if wrk:
        out = subprocess.run(
            [wrk, "-t1", "-c16", f"-d{seconds:g}s", url], check=True, capture_output=True, text=True
        ).stdout
        if "Non-2xx" in out:
            raise SystemExit(f"non-2xx answers during load:\n{out}")
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return python_load(url, seconds)


def python_load(url: str, seconds: float, threads: int = 8) -> float:
    """Fallback load generator: keep-alive http.client in threads."""
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        while time.monotonic() < stop:
            conn.request("GET", parts.path)
            conn.getresponse().read()
            counts[n] += 1

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / seconds


def bench_ratio(fake, base: ServerURL, seconds: float, rounds: int) -> list[Row]:  # type: ignore[no-untyped-def]
    """Req/s of /price/<symbol> (rate limiter on) divided by a bare Flask route's.

    The three servers run side by side and are measured in turns, round after round, the
    order rotating each round; each ratio is the median of the per-round ratios, so load
    from anything else on the machine hits both sides of a ratio alike. The workers' CPU
    time per request gives a second, steadier view of the same cost.
    """
    wrk = ensure_wrk()
    quiet_env = {**service_env(fake.ws_url, fake.rest_url), "LOG_LEVEL": "WARNING"}
    with (
        gunicorn("bare_app:create_app()", {}, Path(__file__).parent) as bare,
        gunicorn("websocket_streaming:create_app()", quiet_env, SERVICE_DIR) as quiet,
    ):
        wait_for_price(fake, quiet)
        servers = {
            "bare": (bare, "/bare/BTCUSDT"),
            "price": (base, "/price/BTCUSDT"),
            "quiet": (quiet, "/price/BTCUSDT"),
        }
        for server, path in servers.values():
            load(server + path, 1, wrk)  # warm-up
        rate: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        names = list(servers)
        for n in range(rounds):
            for name in names[n % 3 :] + names[: n % 3]:
                server, path = servers[name]
                before = server.worker_cpu()
                rate[name].append(load(server + path, seconds, wrk))
                cpu[name].append((server.worker_cpu() - before) / (rate[name][-1] * seconds))
    tool = "wrk -t1 -c16" if wrk else "python keep-alive client, 8 threads"
    rows = [
        Row(
            f"bare Flask route req/s ({tool}, median of {rounds})",
            f"{statistics.median(rate['bare']):,.0f}",
            "",
            None,
        ),
        Row("/price req/s, defaults (median)", f"{statistics.median(rate['price']):,.0f}", "", None),
    ]
    for name, label in (("price", "defaults (LOG_LEVEL=INFO: access log on)"), ("quiet", "LOG_LEVEL=WARNING")):
        ratios = sorted(c / b for b, c in zip(rate["bare"], rate[name], strict=True))
        median = statistics.median(ratios)
        spread = f"{median:.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
        rows.append(Row(f"/price / bare req/s, {label}", spread, ">= 0.85", median >= 0.85))
        cpu_ratio = statistics.median(b / c for b, c in zip(cpu["bare"], cpu[name], strict=True))
        rows.append(
            Row(
                f"  same, by worker CPU per request (bare {statistics.median(cpu['bare']) * 1e6:.0f} us)",
                f"{cpu_ratio:.2f}",
                "",
                None,
            )
        )
    return rows


def wait_for_price(fake, base: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for the upstream connection, then give BTCUSDT a price."""
    port = int(base.rsplit(":", 1)[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fake.send(trade_event("BTCUSDT", "90000.5", next(TRADE_IDS)), stream="btcusdt@trade")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/price/BTCUSDT")
        if conn.getresponse().status == 200:
            return
        time.sleep(0.1)
    raise SystemExit("the service never got a price from the fake exchange")


# ---- 4. SSE fan-out ----------------------------------------------------------------------
def wait_streams_closed(base: str, timeout: float = 90.0) -> None:
    """Wait until the server has noticed the last run's streams are gone (at its next write:
    a heartbeat at the latest), so their slots are free."""
    port = int(base.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    body = b""
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/stats")
        answer = conn.getresponse()
        body = answer.read()
        if answer.status == 200 and json.loads(body)["sse_subscribers"] == 0:
            return
        # still held; or 429: /stats has the default rate limit, which many runs in a row reach
        time.sleep(float(answer.getheader("Retry-After") or 0.5) if answer.status == 429 else 0.5)
    raise SystemExit(f"the previous run's SSE streams were never released; /stats: {body[:200]!r}")


def sse_delays(fake, base: str, subscribers: int, events: int, stall: bool) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    """Feed-to-subscriber delays (ms) of N SSE subscribers, and how many events never came.

    Between trades the feed sends bookTicker quotes that only a stalled subscriber (with
    `stall`) asked for, so its socket fills and stays full; the load is the same either way.
    """
    wait_streams_closed(base)
    ready = Path(tempfile.mkdtemp()) / "ready"
    argv = [sys.executable, str(Path(__file__).parent / "sse_clients.py"), base, str(subscribers)]
    clients = subprocess.Popen(
        [*argv, str(events), str(ready), *(["stall"] if stall else [])], stdout=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if time.monotonic() > deadline or clients.poll() is not None:
            clients.kill()  # never left behind, holding streams
            raise SystemExit("SSE clients did not connect")
        time.sleep(0.05)
    sent: dict[int, float] = {}
    quote_id = itertools.count(int(time.time() * 1000))
    for n in range(events):
        sent[n] = time.monotonic()
        fake.send(trade_event("ETHUSDT", f"{50000 + n}", next(TRADE_IDS)), stream="ethusdt@trade")
        for _ in range(20):
            quote = {"u": next(quote_id), "s": "BTCUSDT", "b": "90000.5", "B": "1", "a": "90001.5", "A": "2"}
            fake.send(quote, stream="btcusdt@bookTicker")
        time.sleep(0.05)
    out, _ = clients.communicate(timeout=120)
    received = json.loads(out)
    delays = [(at - sent[n]) * 1000 for stream in received for n, at in stream]
    return delays, subscribers * events - len(delays)


def bench_sse(fake, base: str, subscribers: int, events: int, rounds: int) -> list[Row]:  # type: ignore[no-untyped-def]
    """p99 delay from the feed sending a frame to each of N SSE subscribers reading it, without
    and with one more subscriber that never reads: `rounds` pairs, the order alternating, and
    the median of the per-round ratios (load from elsewhere on the machine drifts between two
    runs; a pair run back to back sees the same)."""
    worst: dict[bool, list[float]] = {False: [], True: []}
    missing = 0
    for n in range(rounds):
        for stall in (False, True) if n % 2 == 0 else (True, False):
            delays, lost = sse_delays(fake, base, subscribers, events, stall=stall)
            worst[stall].append(p99(delays))
            missing += lost
    ratios = sorted(w / c for c, w in zip(worst[False], worst[True], strict=True))
    ratio, plain, stalled = (
        statistics.median(ratios),
        statistics.median(worst[False]),
        statistics.median(worst[True]),
    )
    expected = 2 * rounds * subscribers * events
    return [
        Row(
            f"SSE fan-out p99, {subscribers} subscribers (ms, median of {rounds})",
            f"{plain:.2f}",
            "<= 50",
            plain <= 50,
        ),
        Row(
            "SSE events delivered / expected (every run)",
            f"{expected - missing} / {expected}",
            "all",
            missing == 0,
        ),
        Row(
            f"SSE fan-out p99, {subscribers} subscribers + 1 that never reads (ms, median)",
            f"{stalled:.2f}",
            "",
            None,
        ),
        Row(
            "p99 with the stalled subscriber / without (median of the rounds' ratios)",
            f"{ratio:.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})",
            "<= 1.20",
            ratio <= 1.2,
        ),
    ]


@contextmanager
def keep_feed_alive(fake, symbol: str = "SOLUSDT", every: float = 1.0) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Trade `symbol` every `every` s, as a live market does: a silent feed would make the
    services' watchdogs replace their connections (with growing backoff) mid-benchmark."""
    import threading

    stop = threading.Event()

    def trade() -> None:
        n = 0
        while not stop.wait(every):
            n += 1
            fake.send(
                trade_event(symbol, f"{150 + n % 7}.5", next(TRADE_IDS)), stream=f"{symbol.lower()}@trade"
            )

    thread = threading.Thread(target=trade, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ---- main --------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    """Print the results as a Markdown table."""
    print("\n| measurement | result | goal | met |")
    print("| --- | ---: | --- | --- |")
    for r in rows:
        met = "" if r.ok is None else ("yes" if r.ok else "NO")
        print(f"| {r.name} | {r.value} | {r.goal} | {met} |")


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller samples")
    args = parser.parse_args()
    from fake_exchange import FakeExchange

    rows = bench_parse(50_000 if args.quick else 200_000)
    rows += bench_book_ticker(50_000 if args.quick else 200_000)
    with FakeExchange(rate=0) as fake, keep_feed_alive(fake):
        env = service_env(fake.ws_url, fake.rest_url)
        with gunicorn("websocket_streaming:create_app()", env, SERVICE_DIR) as base:
            wait_for_price(fake, base)
            rows += bench_delay(fake, base, 200 if args.quick else 1000)
            rows += bench_ratio(fake, base, 2 if args.quick else 3, 3 if args.quick else 9)
            rows += bench_sse(fake, base, 200, 50 if args.quick else 200, 3 if args.quick else 5)
    print_table(rows)


if __name__ == "__main__":
    main()
