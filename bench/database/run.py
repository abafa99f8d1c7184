"""database-service benchmark on PostgreSQL: ingest, history latency, statistics, each against a baseline.

    python bench/database/run.py                 # 1,000,000 signals and 1,000,000 trades
    python bench/database/run.py --rows 20000    # quick check (about two minutes)

Everything goes through the HTTP API of the real server: gunicorn with
database-service/gunicorn.conf.py (2 gthread workers x 4 threads), rate limiting off, the
statistics cache in Redis when it answers. Rates do not travel between machines, so each
has a baseline measured in the same run, on the same database and tables:
- batches of 1000 against `COPY` of the same rows (same clients, 1000 rows per COPY and commit),
  answered in full and with `Prefer: return=minimal` (count, created and the ids);
- single saves against a minimal Flask route doing one `INSERT ... RETURNING` and a commit
  per request with psycopg2 (bench/database/minimal_app.py), under the same gunicorn settings;
- uncached statistics against fetching every trade into Python.
Rounds alternate service and baseline; the table shows the median of the per-round ratios.
The run creates a scratch database of its own on the server and drops it at the end.
"""

from __future__ import annotations

import argparse
import http.client
import io
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))  # sardag_testing

from client import Http, concurrent_posts, latencies, run_threads
from database_service.cursor import encode_cursor
from database_service.storage import open_storage
from database_service.storage.base import datetime_to_us
from load import SYMBOLS, load
from naive import naive_stats
from sardag_testing import free_port, scratch_postgres

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOALS = {
    "batch_vs_copy": 0.5,
    "minimal_batch_vs_copy": 0.6,
    "single_vs_minimal": 0.7,
    "history_p99_ms": 15.0,
    "stats_ratio": 10.0,
    "cached_p99_ms": 5.0,
}
BATCH = 1000
MINIMAL = {"Prefer": "return=minimal"}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="signals and trades to preload")
    parser.add_argument(
        "--postgres", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/14", help="FLUSHED; '' for the in-process cache"
    )
    parser.add_argument("--samples", type=int, default=300, help="requests per latency measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients for ingest")
    parser.add_argument("--rounds", type=int, default=3, help="ingest rounds, service and baseline in turn")
    parser.add_argument("--singles", type=int, default=1000, help="single saves per round and side")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1000 per round and side")
    return parser.parse_args()


def redis_ok(url: str) -> bool:
    """True when Redis answers (then the cache lives there, as in production)."""
    if not url:
        return False
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.flushdb()
        return True
    except redis.RedisError:
        return False


def start_gunicorn(
    database_url: str, redis_url: str, port: int, workdir: Path, conf: Path, app: str
) -> subprocess.Popen[bytes]:
    """Start `app` under `conf` with the production settings (2 workers x 4 threads), limits off."""
    env = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "BIND", "REDIS_URL"}}
    env.update(
        DATABASE_URL=database_url,
        PORT=str(port),
        RATE_LIMIT_ENABLED="0",
        LOG_LEVEL="WARNING",
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / f"metrics-{port}"),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]),
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "gunicorn", "-c", str(conf), app]
    process = subprocess.Popen(command, cwd=workdir, env=env, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if Http("127.0.0.1", port).get("/health")[0] == 200:
                return process
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"gunicorn ({app}) did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait."""
    process.terminate()
    process.wait(timeout=60)


def signal_body(i: int) -> dict[str, object]:
    """One signal to ingest."""
    return {
        "symbol": SYMBOLS[i % len(SYMBOLS)],
        "action": "BUY",
        "price": 100 + i % 997 / 7,
        "confidence": 0.5,
        "strategy": "bench",
        "timeframe": "1m",
    }


def ingest(args: argparse.Namespace, url: str, port: int, minimal_port: int) -> dict[str, list[float]]:
    """Per round: single saves (service, minimal route), batches (full, return=minimal, COPY), signals/s."""
    rates: dict[str, list[float]] = {"single": [], "minimal": [], "batch": [], "batch_minimal": [], "copy": []}
    for rnd in range(args.rounds):
        first = rnd * 1_000_000
        singles = [signal_body(first + i) for i in range(args.singles)]
        rates["single"].append(concurrent_posts(port, "/signals/save", singles, args.clients))
        rates["minimal"].append(concurrent_posts(minimal_port, "/signals/save", singles, args.clients))
        batches = [[signal_body(first + b * BATCH + i) for i in range(BATCH)] for b in range(args.batches)]
        # the same bodies for both answers (every row is new: no client_id), in turn first
        for name in ("batch", "batch_minimal")[:: 1 if rnd % 2 == 0 else -1]:
            headers = MINIMAL if name == "batch_minimal" else None
            rates[name].append(concurrent_posts(port, "/signals/save", batches, args.clients, headers) * BATCH)
        rates["copy"].append(copy_rate(url, batches, args.clients))
        last = {name: f"{values[-1]:,.0f}/s" for name, values in rates.items()}
        print(
            f"  ingest round {rnd + 1}: single {last['single']}, minimal route {last['minimal']}; "
            f"batches {last['batch']}, batches return=minimal {last['batch_minimal']}, COPY {last['copy']}",
            flush=True,
        )
    return rates


def copy_rate(url: str, batches: list[list[dict[str, object]]], clients: int) -> float:
    """Rows/s to COPY the same rows into signals: `clients` connections, one COPY and commit per batch."""
    now = datetime.now(UTC).isoformat()
    texts = ["".join(_copy_line(row, now) for row in batch) for batch in batches]
    shares = [texts[i::clients] for i in range(clients)]
    connections = [psycopg2.connect(url) for _ in shares]

    def load(conn: psycopg2.extensions.connection, share: list[str]) -> None:
        for text in share:
            with conn.cursor() as cur:
                cur.copy_expert(f"COPY signals ({COPY_COLUMNS}) FROM STDIN", io.StringIO(text))
            conn.commit()

    elapsed = run_threads(
        [threading.Thread(target=load, args=p) for p in zip(connections, shares, strict=True)]
    )
    for conn in connections:
        conn.close()
    return sum(len(b) for b in batches) / elapsed


COPY_COLUMNS = "symbol, action, price, confidence, strategy, timeframe, ts"


def _copy_line(row: dict[str, object], ts: str) -> str:
    values = (
        row["symbol"],
        row["action"],
        row["price"],
        row["confidence"],
        row["strategy"],
        row["timeframe"],
        ts,
    )
    return "\t".join(str(v) for v in values) + "\n"


def page_cursor(database_url: str, symbol: str, page: int, limit: int) -> str | None:
    """The cursor that /signals/history returns for `page` (the last row of page - 1)."""
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ts, id FROM signals WHERE symbol = %s ORDER BY ts DESC, id DESC OFFSET %s LIMIT 1",
            (symbol, (page - 1) * limit - 1),
        )
        row = cur.fetchone()
    conn.close()
    return None if row is None else encode_cursor(datetime_to_us(row[0]), row[1])


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000


def history(port: int, database_url: str, rows: int, samples: int) -> dict[str, tuple[float, float, int]]:
    """p50/p99 of page 1 and of the deepest page up to 1000, walked by cursor."""
    symbol = SYMBOLS[0]
    page = max(1, min(1000, rows // len(SYMBOLS) // 100))
    cursor = page_cursor(database_url, symbol, page, 100) if page > 1 else None
    first = latencies(port, [f"/signals/history?symbol={symbol}&limit=100"] * samples, expect=100)
    deep_url = f"/signals/history?symbol={symbol}&limit=100" + (f"&cursor={cursor}" if cursor else "")
    deep = latencies(port, [deep_url] * samples, expect=100)
    return {
        "page 1": (pct(first, 0.5), pct(first, 0.99), 1),
        f"page {page}": (pct(deep, 0.5), pct(deep, 0.99), page),
    }


def stats_timings(port: int, samples: int) -> dict[str, list[float]]:
    """Uncached: every request has a new `since` (1970 + i ms, so all trades count); cached: one URL."""
    uncached = latencies(port, [f"/performance/stats?since={i}" for i in range(1, 11)], cache="MISS")
    latencies(port, ["/performance/stats"], cache="MISS")
    cached = latencies(port, ["/performance/stats"] * samples, cache="HIT")
    return {"uncached": uncached, "cached": cached}


def main() -> int:
    """Run every measurement once and print the table."""
    args = parse_args()
    workdir = ROOT / "bench/results"
    workdir.mkdir(parents=True, exist_ok=True)
    with scratch_postgres(args.postgres, "sardag_bench") as url:
        results = run(args, url, workdir)
    print_table(args, results, "redis" if results["redis"] else "in-process")
    return 0


def run(args: argparse.Namespace, url: str, workdir: Path) -> dict[str, object]:
    """Load the rows, start the service and the minimal baseline, measure."""
    storage = open_storage(url)
    storage.migrate()
    storage.close()
    started = time.perf_counter()
    load(url, args.rows)
    load_s = time.perf_counter() - started
    print(f"loaded {args.rows:,} signals and {args.rows:,} trades with COPY in {load_s:.1f} s", flush=True)
    started = time.perf_counter()
    storage = open_storage(url)
    storage.rebuild_summaries()  # COPY bypassed the API, which keeps the hourly buckets current
    storage.close()
    print(f"rebuilt the hourly trade buckets in {time.perf_counter() - started:.1f} s", flush=True)
    redis_url = args.redis if redis_ok(args.redis) else ""
    port, minimal_port = free_port(), free_port()
    conf = ROOT / "database-service/gunicorn.conf.py"
    server = start_gunicorn(url, redis_url, port, workdir, conf, "database_service:create_app()")
    minimal = start_gunicorn(
        url, "", minimal_port, workdir, HERE / "gunicorn.conf.py", "minimal_app:create_app()"
    )
    try:
        results = measure(args, url, port)
        results["ingest"] = ingest(args, url, port, minimal_port)
    finally:
        stop(server)
        stop(minimal)
    results["redis"] = bool(redis_url)
    return results


def measure(args: argparse.Namespace, url: str, port: int) -> dict[str, object]:
    """History and statistics (on exactly --rows rows, before any ingest)."""
    results: dict[str, object] = {"history": history(port, url, args.rows, args.samples)}
    results["stats"] = stats_timings(port, args.samples)
    naive_runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        naive_result = naive_stats(url)
        naive_runs.append(time.perf_counter() - t0)
    results["naive"] = statistics.median(naive_runs)
    api = Http("127.0.0.1", port).get("/performance/stats")[1]
    results["agree"] = all(
        math.isclose(api[k], naive_result[k], rel_tol=1e-6, abs_tol=1e-6)
        for k in ("total_pnl", "win_rate", "max_drawdown", "sqn", "profit_factor")
    )
    return results


def print_table(args: argparse.Namespace, r: dict[str, object], cache: str) -> None:
    """The result table, with goals."""
    ingest_r, hist, st = r["ingest"], r["history"], r["stats"]
    uncached_p50 = statistics.median(st["uncached"])
    ratio = r["naive"] / uncached_p50
    med = statistics.median
    batch_ratio = med(a / b for a, b in zip(ingest_r["batch"], ingest_r["copy"], strict=True))
    minimal_ratio = med(a / b for a, b in zip(ingest_r["batch_minimal"], ingest_r["copy"], strict=True))
    single_ratio = med(a / b for a, b in zip(ingest_r["single"], ingest_r["minimal"], strict=True))
    rows = [
        ("single saves (signals/s)", f"{med(ingest_r['single']):,.0f}", "", ""),
        ("minimal INSERT ... RETURNING route (signals/s)", f"{med(ingest_r['minimal']):,.0f}", "", ""),
        (
            "single saves / minimal route",
            f"{single_ratio:.2f}",
            ">= 0.70",
            _ok(single_ratio >= GOALS["single_vs_minimal"]),
        ),
        ("batches of 1000 (signals/s)", f"{med(ingest_r['batch']):,.0f}", "", ""),
        ("COPY of the same rows (signals/s)", f"{med(ingest_r['copy']):,.0f}", "", ""),
        ("batches / COPY", f"{batch_ratio:.2f}", ">= 0.50", _ok(batch_ratio >= GOALS["batch_vs_copy"])),
        ("batches with Prefer: return=minimal (signals/s)", f"{med(ingest_r['batch_minimal']):,.0f}", "", ""),
        (
            "batches return=minimal / COPY",
            f"{minimal_ratio:.2f}",
            ">= 0.60",
            _ok(minimal_ratio >= GOALS["minimal_batch_vs_copy"]),
        ),
    ]
    for name, (p50, p99, _) in hist.items():
        rows.append(
            (
                f"history {name} p50 / p99 (ms)",
                f"{p50:.2f} / {p99:.2f}",
                "p99 <= 15",
                _ok(p99 <= GOALS["history_p99_ms"]),
            )
        )
    rows += [
        (
            "stats uncached p50 / max (ms)",
            f"{uncached_p50 * 1000:.1f} / {max(st['uncached']) * 1000:.1f}",
            "",
            "",
        ),
        (
            "stats cached p50 / p99 (ms)",
            f"{pct(st['cached'], 0.5):.2f} / {pct(st['cached'], 0.99):.2f}",
            "p99 <= 5",
            _ok(pct(st["cached"], 0.99) <= GOALS["cached_p99_ms"]),
        ),
        ("naive baseline: all trades into Python (ms)", f"{r['naive'] * 1000:.1f}", "", ""),
        ("naive / uncached stats (x)", f"{ratio:.1f}", ">= 10", _ok(ratio >= GOALS["stats_ratio"])),
        ("naive and database statistics agree", str(r["agree"]), "True", _ok(bool(r["agree"]))),
    ]
    print(
        f"\ndatabase-service on PostgreSQL, {args.rows:,} signals + {args.rows:,} trades preloaded; "
        f"gunicorn 2 workers x 4 threads, HTTP keep-alive, {args.clients} clients for ingest; cache: {cache}\n"
        f"ingest: {args.rounds} rounds of {args.singles} single saves and {args.batches} batches per side; "
        "ratios are medians of per-round ratios"
    )
    width = max(len(row[0]) for row in rows)
    print(f"{'measurement':<{width}}  {'result':>17}  {'goal':>10}  ok")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:>17}  {goal:>10}  {ok}")


def _ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
