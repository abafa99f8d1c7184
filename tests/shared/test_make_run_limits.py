"""`make run` as a new user meets it: every limited route admits exactly its limit, across workers.

scripts/run.sh runs as a subprocess on free ports with the fake exchange (tools/fake-exchange) (FEED=fake,
the README's `make run-offline`), embedded defaults only: SQLite, no Redis, the workers
the gunicorn configs choose. Limit + 5 rapid requests to each limited route, from 8
threads on fresh connections (so they spread over database-service's workers), must give
exactly limit x 2xx and 5 x 429, with X-RateLimit-* headers from one shared count.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sardag_testing import free_port, wait_until
from sardag_testing.processes import REPO, VENV_BIN

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]

SIGNAL = {"symbol": "BTCUSDT", "action": "BUY", "price": 101.5}
TRADE = {"symbol": "BTCUSDT", "entry_price": 100, "exit_price": 104}
DATABASE_ROUTES = [  # (method, path, body, limit): the declared limits, the rest RATE_LIMIT_DEFAULT
    ("POST", "/signals/save", SIGNAL, 100),
    ("GET", "/signals/history", None, 200),
    ("POST", "/performance/track", TRADE, 100),
    ("GET", "/performance/trades", None, 200),
    ("GET", "/signals/1", None, 60),
    ("GET", "/performance/stats", None, 60),
    ("GET", "/stats", None, 60),
    ("GET", "/openapi.json", None, 60),
]
STREAMING_ROUTES = [
    ("GET", "/price/BTCUSDT", None, 300),
    ("GET", "/stream", None, 60),
    ("GET", "/symbols", None, 60),
    ("GET", "/prices", None, 60),
    ("GET", "/stats", None, 60),
]


@dataclass
class Answer:
    """Status, rate-limit headers and error code of one response."""

    status: int
    headers: dict[str, str]
    error: str | None


@dataclass
class MakeRun:
    """scripts/run.sh running, and where its services listen."""

    process: subprocess.Popen[bytes]
    log: Path
    db_port: int
    ws_port: int


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on a fresh connection from `source` (an SSE stream is closed after its headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        streaming = response.getheader("Content-Type", "").startswith("text/event-stream")
        raw = b"" if streaming else response.read()
        error = json.loads(raw).get("error") if response.status >= 400 and raw else None
        names = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")
        found = {n: response.getheader(n) for n in names if response.getheader(n) is not None}
        return Answer(response.status, found, error)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """`FEED=fake scripts/run.sh` on free ports, on a scratch SQLite file; stopped afterwards."""
    run = start_run(tmp_path_factory.mktemp("make-run"))
    try:
        yield run
    finally:
        os.killpg(run.process.pid, signal.SIGTERM)
        try:
            run.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait(10)


def start_run(tmp: Path) -> MakeRun:
    """Start `FEED=fake scripts/run.sh` and wait for both services and a first price."""
    dropped = ("WEB_CONCURRENCY", "GUNICORN_", "PROMETHEUS_", "RATE_LIMIT_", "SARDAG_", "API_KEY", "BIND")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k != "PORT"}
    db_port, ws_port = free_port(), free_port()
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        FEED="fake",
        FAKE_PORT=str(free_port()),
        DATABASE_SERVICE_PORT=str(db_port),
        WEBSOCKET_STREAMING_PORT=str(ws_port),
        DATABASE_URL=f"sqlite:///{tmp / 'sardag.db'}",
        REDIS_URL="",  # the environment wins over a developer's .env: embedded defaults only
        TMPDIR=str(tmp),  # the metrics directories and the host store go under it
        LOG_LEVEL="WARNING",
        # streams opened here are closed after their headers, but the server frees a slot only
        # when it next writes: the per-client stream cap is another limit than this test's
        SSE_MAX_STREAMS_PER_CLIENT="1000",
    )
    log = tmp / "run.log"
    with log.open("wb") as sink:
        command = ["bash", "scripts/run.sh"]
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    run = MakeRun(process, log, db_port, ws_port)
    try:
        for port in (db_port, ws_port):
            wait_until(lambda p=port: _healthy(run, p), 90, f"make run: /health on {port}")
        # wait for the feed from another loopback address: 127.0.0.1's budgets stay untouched
        wait_until(lambda: _priced(ws_port), 60, "a first price from the fake exchange")
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        raise
    return run


def _healthy(run: MakeRun, port: int) -> bool:
    if run.process.poll() is not None:
        pytest.fail(f"scripts/run.sh exited with {run.process.returncode}:\n{run.log.read_text()[-3000:]}")
    try:
        return request(port, "GET", "/health", source="127.0.0.2").status == 200
    except OSError:
        return False


def _priced(port: int) -> bool:
    return request(port, "GET", "/price/BTCUSDT", source="127.0.0.2").status == 200


def burst(
    port: int, method: str, path: str, body: Any, count: int, headers: dict[str, str] | None = None
) -> list[Answer]:
    """`count` rapid requests from 8 threads, each on a fresh connection."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: request(port, method, path, body, headers=headers), range(count)))


def check_exact(answers: list[Answer], limit: int, where: str) -> None:
    """limit x 2xx and 5 x 429, each admission counted once, correct headers on every answer."""
    admitted = [a for a in answers if 200 <= a.status < 300]
    rejected = [a for a in answers if a.status == 429]
    assert (len(admitted), len(rejected)) == (limit, 5), f"{where}: {sorted(a.status for a in answers)}"
    now = time.time()
    for answer in answers:
        assert answer.headers["X-RateLimit-Limit"] == str(limit), where
        assert now - 1 <= int(answer.headers["X-RateLimit-Reset"]) <= now + 62, (where, answer.headers)
    # one count shared by every worker: the admissions saw limit-1, limit-2, ..., 0 exactly once each
    remaining = sorted(int(a.headers["X-RateLimit-Remaining"]) for a in admitted)
    assert remaining == list(range(limit)), f"{where}: remaining values {remaining}"
    for answer in rejected:
        retry_after = int(answer.headers["Retry-After"])
        assert answer.error == "rate_limited", where
        assert answer.headers["X-RateLimit-Remaining"] == "0", where
        assert 1 <= retry_after <= 60, (where, answer.headers)
        assert abs(int(answer.headers["X-RateLimit-Reset"]) - math.ceil(now + retry_after)) <= 2, where


ROUTES = [("database-service", *route) for route in DATABASE_ROUTES]
ROUTES += [("websocket-streaming", *route) for route in STREAMING_ROUTES]


@pytest.mark.parametrize(("service", "method", "path", "body", "limit"), ROUTES)
def test_each_limited_route_admits_exactly_its_limit(
    make_run: MakeRun, service: str, method: str, path: str, body: Any, limit: int
) -> None:
    port = make_run.db_port if service == "database-service" else make_run.ws_port
    check_exact(burst(port, method, path, body, limit + 5), limit, f"{service} {method} {path}")


def test_the_start_up_log_says_how_each_service_counts(make_run: MakeRun) -> None:
    log = make_run.log.read_text(errors="replace")
    assert "rate limits: exact across 2 workers through a store on this host" in log
    assert "rate limits: in-process, exact (1 worker, no REDIS_URL)" in log


def test_ctrl_c_stops_the_services_before_the_fake_exchange(tmp_path: Path) -> None:
    # the fake exchange stopped first made websocket-streaming warn "upstream connection lost"
    run = start_run(tmp_path)
    os.killpg(run.process.pid, signal.SIGINT)  # what the terminal's Ctrl-C sends the foreground group
    try:
        run.process.wait(60)
    finally:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
    log = run.log.read_text(errors="replace")
    assert not re.search(r"upstream connection \S+ lost|connection \S+ failed", log), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
