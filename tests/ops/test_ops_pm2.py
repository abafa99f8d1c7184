"""PM2 from npm: `pm2 start ecosystem.config.js` runs both services (FEED=fake: and the fake
exchange feeding them); `pm2 delete` stops them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sardag_testing.processes import http, listening

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]


class PM2:
    """The repository's pm2 (node_modules/.bin) with its own PM2_HOME and environment."""

    def __init__(self, binary: str, env: dict[str, str], cwd: Path) -> None:
        self.binary = binary
        self.env = env
        self.cwd = cwd

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def apps(self) -> dict[str, dict[str, Any]]:
        result = self.run("jlist")
        assert result.returncode == 0, result.stderr
        listing = result.stdout[result.stdout.index("[") :]
        return {app["name"]: app for app in json.loads(listing)}


def _pm2_binary(ops: SimpleNamespace) -> str:
    ops.find_tool("node")
    ops.find_tool("npm")
    return ops.find_tool("pm2", ops.REPO / "node_modules/.bin/pm2")


def _pm2(ops: SimpleNamespace, tmp_path: Path, **extra: str) -> PM2:
    """PM2 with a home, logs, run dir and service ports of this test's own."""
    env = ops.base_env(
        tmp_path,
        PM2_HOME=str(tmp_path / "pm2-home"),
        SARDAG_LOG_DIR=str(tmp_path / "logs"),
        SARDAG_RUN_DIR=str(tmp_path / "run"),
        SARDAG_VENV=str(Path(ops.find_tool("gunicorn")).parent.parent),
        DATABASE_SERVICE_PORT=str(ops.free_port()),
        WEBSOCKET_STREAMING_PORT=str(ops.free_port()),
        DATABASE_SERVICE_WORKERS="2",
    )
    for name in ("PORT", "FEED", "FAKE_PORT", "BINANCE_WS_URL", "BINANCE_REST_URL"):
        env.pop(name, None)  # only what this test gives
    env.update(extra)
    return PM2(_pm2_binary(ops), env, ops.REPO)


@pytest.fixture
def pm2(ops: SimpleNamespace, launcher: Any, tmp_path: Path) -> Iterator[PM2]:
    """PM2 whose websocket-streaming reads a fake exchange this test started itself."""
    exchange = launcher.fake_exchange()
    match = re.search(r"BINANCE_WS_URL=(\S+) BINANCE_REST_URL=(\S+)", exchange.log_tail())
    assert match, exchange.log_tail()
    manager = _pm2(ops, tmp_path, BINANCE_WS_URL=match[1], BINANCE_REST_URL=match[2])
    try:
        yield manager
    finally:
        manager.run("kill", timeout=60)


@pytest.fixture
def pm2_offline(ops: SimpleNamespace, tmp_path: Path) -> Iterator[PM2]:
    """PM2 as the README's offline line runs it: FEED=fake, the fake exchange a third app."""
    ops.require_service_code()
    manager = _pm2(ops, tmp_path, FEED="fake", FAKE_PORT=str(ops.free_port()))
    try:
        yield manager
    finally:
        manager.run("kill", timeout=60)


def _ports(pm2: PM2) -> dict[str, int]:
    return {
        "database-service": int(pm2.env["DATABASE_SERVICE_PORT"]),
        "websocket-streaming": int(pm2.env["WEBSOCKET_STREAMING_PORT"]),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pm2_start_serves_both_then_delete_stops_them(pm2: PM2, ops: SimpleNamespace) -> None:
    stale = Path(pm2.env["SARDAG_RUN_DIR"]) / "database-service" / "metrics" / "counter_1.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from a previous run")

    started = pm2.run("start", "ecosystem.config.js")
    assert started.returncode == 0, started.stdout + started.stderr
    for name, port in _ports(pm2).items():
        ops.wait_until(
            lambda port=port: ops.answers(f"http://127.0.0.1:{port}/health"), 60, f"{name} /health via PM2"
        )
    apps = pm2.apps()
    assert set(apps) == set(ops.SERVICES)
    assert {app["pm2_env"]["status"] for app in apps.values()} == {"online"}
    assert not stale.exists(), "gunicorn's on_starting hook must empty PROMETHEUS_MULTIPROC_DIR"
    database = pm2.env["DATABASE_URL"].removeprefix("sqlite:///")
    assert Path(database).exists(), "PM2 must pass the caller's environment (DATABASE_URL) on"
    logs = Path(pm2.env["SARDAG_LOG_DIR"])
    assert {p.name for p in logs.iterdir()} >= {f"{name}.err.log" for name in ops.SERVICES}
    pids = [int(app["pid"]) for app in apps.values()]

    deleted = pm2.run("delete", "ecosystem.config.js")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert pm2.apps() == {}
    for name, port in _ports(pm2).items():
        assert not ops.answers(f"http://127.0.0.1:{port}/health", (200, 503)), f"{name} still answers"
    ops.wait_until(lambda: not any(_pid_alive(pid) for pid in pids), 40, "gunicorn masters to exit")


def _live_price(url: str) -> dict[str, Any] | None:
    """websocket-streaming's /price/BTCUSDT once a fresh price came over the WebSocket (the
    start-up backfill's REST price comes first)."""
    try:
        status, body = http("GET", f"{url}/price/BTCUSDT", timeout=2)
    except OSError:
        return None
    live = status == 200 and body["stale"] is False and body["source"] == "websocket"
    return body if live else None


def test_pm2_offline_feeds_websocket_streaming_from_the_fake_exchange_then_stops_all_three(
    pm2_offline: PM2, ops: SimpleNamespace
) -> None:
    pm2, fake_port = pm2_offline, int(pm2_offline.env["FAKE_PORT"])
    started = pm2.run("start", "ecosystem.config.js")
    assert started.returncode == 0, started.stdout + started.stderr
    streaming = f"http://127.0.0.1:{pm2.env['WEBSOCKET_STREAMING_PORT']}"
    first = ops.wait_until(lambda: _live_price(streaming), 60, "a live price from the fake exchange")
    later = ops.wait_until(
        lambda: (p := _live_price(streaming)) and p["received_at"] > first["received_at"] and p,
        10,
        "the price to move on (a live feed, not one frame)",
    )
    assert later["price"] > 0
    _, health = http("GET", f"{streaming}/health")
    assert health["checks"]["upstream"]["detail"]["host"] == f"127.0.0.1:{fake_port}"
    apps = pm2.apps()
    assert set(apps) == {*ops.SERVICES, "fake-exchange"}
    assert {app["pm2_env"]["status"] for app in apps.values()} == {"online"}
    pids = [int(app["pid"]) for app in apps.values()]

    deleted = pm2.run("delete", "ecosystem.config.js")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert pm2.apps() == {}
    ops.wait_until(lambda: not any(_pid_alive(pid) for pid in pids), 40, "all three processes to exit")
    for port in (*_ports(pm2).values(), fake_port):
        assert not listening(port), f"port {port} still accepts connections"


def test_pm2_stop_lets_a_request_in_flight_finish(pm2: PM2, ops: SimpleNamespace) -> None:
    """PM2 sends SIGINT (gunicorn's quick shutdown) whatever the ecosystem's kill_signal says:
    a save whose request is still arriving when `pm2 stop` runs must be answered, not cut off."""
    started = pm2.run("start", "ecosystem.config.js", "--only", "database-service")
    assert started.returncode == 0, started.stdout + started.stderr
    port = _ports(pm2)["database-service"]
    ops.wait_until(lambda: ops.answers(f"http://127.0.0.1:{port}/health"), 60, "database-service via PM2")
    body = json.dumps(
        {"symbol": "BTCUSDT", "action": "BUY", "price": 43250.5, "strategy": "pm2", "client_id": "in-flight"}
    ).encode()
    head = (
        f"POST /signals/save HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    log = Path(pm2.env["SARDAG_LOG_DIR"]) / "database-service.err.log"
    with socket.create_connection(("127.0.0.1", port), timeout=40) as client:
        client.sendall(head[:20])  # accepted, its request line not complete: not yet given to a thread
        with ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(pm2.run, "stop", "database-service")
            ops.wait_until(
                lambda: "Handling signal: int" in log.read_text(), 20, "PM2's SIGINT to reach gunicorn"
            )
            time.sleep(1.0)  # a quick shutdown's workers are gone by now (they exit in 0.1 s)
            client.sendall(head[20:] + body)
            answer = _read_all(client)
            stopped = stopping.result(timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    assert b'"client_id":"in-flight"' in answer.replace(b" ", b"")
    assert "SIGINT stops gracefully" in log.read_text()


def _read_all(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it reset it)."""
    chunks = []
    try:
        while chunk := client.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        chunks.append(b"<connection reset by the server>")
    return b"".join(chunks)
