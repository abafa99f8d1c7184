"""Item 5: mixed load on both services (Redis mode, two workers each), driven by Locust.

70 % reads / 30 % writes from 20 users at 5 requests/s each, plus 50 SSE subscribers for
the whole run; requests start once a price is served. Figures: requests/s, p50/p99, errors
(zero besides configured 429s: the limits are set above the load, so none are expected),
and each worker's resident memory at 1/5 of the run ("minute 1") and at its end ("minute
5"), growth at most 10 %. The SSE ring (WS_RING_SIZE, 65,536 by default) is sized down to
256 updates so it is full within seconds, before the first sample.
Short form (CI): 30 s. Long form: 300 s.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sardag_testing import wait_until
from sardag_testing.processes import VENV_BIN, Launcher, Running, rss_kib, service_env
from sardag_testing.servers import PrivatePostgres, PrivateRedis
from sardag_testing.traffic import Client

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.api,
    pytest.mark.database,
]

HERE = Path(__file__).resolve().parent
SECONDS = {"short": 30, "long": 300}
API_USERS, USER_RATE, SSE_USERS = 20, 5.0, 50
RING_SIZE = 256
MAX_GROWTH = 0.10
LIMITS = {
    f"RATE_LIMIT_{route}": "1000000"
    for route in ("DEFAULT", "SIGNALS_SAVE", "SIGNALS_HISTORY", "PERFORMANCE_TRACK", "PRICE", "STREAM")
}


def run_locust(db: Running, ws: Running, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Start Locust headless against both services; its CSV files go to `out`."""
    env = service_env(
        out,
        LOAD_DB_URL=db.url,
        LOAD_WS_URL=ws.url,
        LOAD_API_USERS=str(API_USERS),
        LOAD_USER_RATE=str(USER_RATE),
        LOAD_SSE_USERS=str(SSE_USERS),
        LOAD_SUMMARY=str(out / "summary.json"),
    )
    users = str(API_USERS + SSE_USERS)
    argv = [str(VENV_BIN / "locust"), "-f", str(HERE / "locustfile.py"), "--headless", "-u", users, "-r", users]
    argv += ["-t", f"{seconds}s", "--csv", str(out / "load"), "--only-summary", "--stop-timeout", "3"]
    with (out / "locust.log").open("wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def resident(workers: dict[str, list[int]]) -> dict[int, int]:
    """KiB resident per worker pid."""
    return {pid: rss_kib(pid) for pids in workers.values() for pid in pids}


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of one of Locust's CSV files."""
    with path.open() as source:
        return list(csv.DictReader(source))


def test_mixed_load(
    form: str,
    tmp_path: Path,
    launcher: Launcher,
    private_redis: PrivateRedis,
    private_postgres: Callable[..., PrivatePostgres],
    fake_exchange: Running,
    streaming_settings: Callable[..., dict[str, str]],
) -> None:
    seconds = SECONDS[form]
    common = {"REDIS_URL": private_redis.url, **LIMITS}
    db = launcher.gunicorn("database-service", workers=2, DATABASE_URL=private_postgres().url, **common)
    # every subscriber comes from 127.0.0.1: the per-client stream cap must admit them all
    ws_env = streaming_settings(
        fake_exchange, WS_RING_SIZE=str(RING_SIZE), SSE_MAX_STREAMS_PER_CLIENT=str(SSE_USERS), **common
    )
    ws = launcher.gunicorn("websocket-streaming", workers=2, **ws_env)
    wait_until(lambda: Client(ws.url).get("/price/BTCUSDT").status == 200, 30, "a price")
    # the first worker answering does not mean the second has booted (a loaded machine)
    wait_until(lambda: len(db.children()) == len(ws.children()) == 2, 30, "both workers of each service")
    workers = {"database-service": db.children(), "websocket-streaming": ws.children()}
    assert all(len(pids) == 2 for pids in workers.values()), workers

    started = time.monotonic()
    locust = run_locust(db, ws, seconds, tmp_path)
    time.sleep(max(0.0, started + seconds / 5 - time.monotonic()))
    first = resident(workers)
    time.sleep(max(0.0, started + seconds - 2 - time.monotonic()))
    last = resident(workers)
    locust.wait(timeout=seconds + 60)
    assert {"database-service": db.children(), "websocket-streaming": ws.children()} == workers, (
        "a worker restarted"
    )

    rows = {row["Name"]: row for row in read_csv(tmp_path / "load_stats.csv")}
    failures = read_csv(tmp_path / "load_failures.csv")
    summary = json.loads((tmp_path / "summary.json").read_text())
    report(form, rows, failures, summary, workers, first, last)

    total = rows["Aggregated"]
    assert int(total["Request Count"]) > API_USERS * USER_RATE * seconds * 0.5, "the load was not delivered"
    errors = [f for f in failures if "429" not in f["Error"]]
    assert not errors, f"errors besides 429: {errors}"
    counts = summary["sse_events"].values()
    assert len(counts) == SSE_USERS, f"SSE subscribers that never started: {summary}"
    assert min(counts) > 0, f"SSE subscribers without events: {summary}"
    assert not summary["sse_refused"], summary
    grown = {pid: last[pid] / first[pid] - 1 for pid in first if last[pid] > first[pid] * (1 + MAX_GROWTH)}
    assert not grown, f"resident memory grew more than {MAX_GROWTH:.0%}: {grown}"


def report(
    form: str,
    rows: dict[str, dict[str, str]],
    failures: list[dict[str, str]],
    summary: dict[str, dict[str, int]],
    workers: dict[str, list[int]],
    first: dict[int, int],
    last: dict[int, int],
) -> None:
    """The figure: throughput, latency, errors, SSE events and memory per worker."""
    seconds = SECONDS[form]
    print(f"\nmixed load, {seconds} s ({API_USERS} users x {USER_RATE:g} req/s, {SSE_USERS} SSE subscribers):")
    for name, row in rows.items():
        print(
            f"  {name}: {row['Request Count']} requests, {float(row['Requests/s']):.1f}/s, "
            f"p50 {row['50%']} ms, p99 {row['99%']} ms, failures {row['Failure Count']}"
        )
    print(f"  failures: {[(f['Name'], f['Error'], f['Occurrences']) for f in failures] or 'none'}")
    events = list(summary["sse_events"].values())
    print(f"  SSE: {len(events)} subscribers, {sum(events)} price events (min {min(events, default=0)} each)")
    for service, pids in workers.items():
        for pid in pids:
            growth = last[pid] / first[pid] - 1
            print(
                f"  {service} worker {pid}: {first[pid] / 1024:.1f} MiB at {seconds / 5:g} s, "
                f"{last[pid] / 1024:.1f} MiB at {seconds - 2} s ({growth:+.1%})"
            )
