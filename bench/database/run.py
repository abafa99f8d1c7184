"""database-service benchmark on PostgreSQL: ingest, history latency, statistics vs a naive baseline.

    python bench/database/run.py                 # 1,000,000 signals and 1,000,000 trades
    python bench/database/run.py --rows 20000    # quick check

Everything goes through the HTTP API of the real server: gunicorn with
database-service/gunicorn.conf.py (2 gthread workers x 4 threads), rate limiting off, the
statistics cache in Redis when it answers. The database `sardag_bench` is dropped and
re-created on every run, so tests are never disturbed.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import Http, concurrent_posts, latencies
from database_service.cursor import encode_cursor
from database_service.storage import open_storage
from database_service.storage.base import datetime_to_us
from load import SYMBOLS, load
from naive import naive_stats

from shared.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
GOALS = {"batch": 20_000.0, "history_p99_ms": 15.0, "stats_ratio": 10.0, "cached_p99_ms": 5.0}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="signals and trades to preload")
    parser.add_argument(
        "--postgres", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--database", default="sardag_bench", help="database to (re)create")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14", help="'' for the in-process cache")
    parser.add_argument("--samples", type=int, default=300, help="requests per latency measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients for ingest")
    return parser.parse_args()


def recreate_database(admin_url: str, name: str) -> str:
    """Drop and create the bench database; return its URL."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


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


def start_gunicorn(database_url: str, redis_url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start the service exactly as production does, with limits off."""
    env = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "BIND", "REDIS_URL"}}
    env.update(
        DATABASE_URL=database_url,
        PORT=str(port),
        RATE_LIMIT_ENABLED="0",
        LOG_LEVEL="WARNING",
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(ROOT / "database-service/gunicorn.conf.py"),
        "database_service:create_app()",
    ]
    process = subprocess.Popen(command, cwd=workdir, env=env, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            if Http("127.0.0.1", port).get("/health")[0] == 200:
                return process
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
    process.kill()
    raise SystemExit("gunicorn did not start")


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


def ingest(port: int, clients: int) -> dict[str, float]:
    """Signals per second for single saves and for batches of 1000."""
    singles = [signal_body(i) for i in range(2_000)]
    batches = [[signal_body(b * 1000 + i) for i in range(1000)] for b in range(100)]
    single_rate = concurrent_posts(port, "/signals/save", singles, clients) * 1
    batch_rate = concurrent_posts(port, "/signals/save", batches, clients) * 1000
    return {"single": single_rate, "batch": batch_rate}


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
    url = recreate_database(args.postgres, args.database)
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
    port = free_port()
    server = start_gunicorn(url, redis_url, port, workdir)
    try:
        results = measure(args, url, port)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print_table(args, results, "redis" if redis_url else "in-process")
    return 0


def measure(args: argparse.Namespace, url: str, port: int) -> dict[str, object]:
    """History and statistics first (on exactly --rows rows), ingest last."""
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
    results["ingest"] = ingest(port, args.clients)
    return results


def print_table(args: argparse.Namespace, r: dict[str, object], cache: str) -> None:
    """The result table, with goals."""
    ingest_r, hist, st = r["ingest"], r["history"], r["stats"]
    uncached_p50 = statistics.median(st["uncached"])
    ratio = r["naive"] / uncached_p50
    rows = [
        ("single saves (signals/s)", f"{ingest_r['single']:,.0f}", "", ""),
        (
            "batches of 1000 (signals/s)",
            f"{ingest_r['batch']:,.0f}",
            ">= 20,000",
            _ok(ingest_r["batch"] >= GOALS["batch"]),
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
        f"gunicorn 2 workers x 4 threads, HTTP keep-alive, {args.clients} clients for ingest; cache: {cache}"
    )
    width = max(len(row[0]) for row in rows)
    print(f"{'measurement':<{width}}  {'result':>17}  {'goal':>10}  ok")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:>17}  {goal:>10}  {ok}")


def _ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
