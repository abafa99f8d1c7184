"""Ingest starts in every serving process, whoever starts the app, and only there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_exchange import FakeExchange
from sardag_testing import free_port, wait_until
from sardag_testing.processes import VENV_BIN, Launcher, Running, http, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.websocket, pytest.mark.api]
APP = "websocket_streaming:create_app()"


@pytest.fixture
def live() -> Iterator[FakeExchange]:
    """A fake exchange trading 20 times a second on every stream."""
    with FakeExchange(rate=20, ping_interval=1, ping_timeout=10) as exchange:
        yield exchange


def feed_env(fake: FakeExchange, tmp: Path) -> dict[str, str]:
    """The service's environment, fed by `fake`."""
    return service_env(
        tmp,
        BINANCE_WS_URL=fake.ws_url,
        BINANCE_REST_URL=fake.rest_url,
        SYMBOLS="BTCUSDT,ETHUSDT",
        WS_STREAMS="trade",
        WS_BACKFILL_ENABLED="0",  # every price must come over the WebSocket
        RATE_LIMIT_PRICE="1000000",
    )


def fresh_price(service: Running) -> dict[str, object]:
    """Wait for a /price answer younger than a second; fail with the service's log otherwise."""

    def fresh() -> dict[str, object] | None:
        try:
            status, body = http("GET", f"{service.url}/price/BTCUSDT")
        except OSError:
            return None
        return body if status == 200 and body["age_seconds"] < 1 else None

    try:
        return wait_until(fresh, 20.0, "a fresh price")
    except BaseException:
        print(service.log_tail())
        raise


def start_plain(launch: Launcher, how: str, env: dict[str, str]) -> Running:
    """Start the app without the project's gunicorn.conf.py: `how` names the command."""
    port = free_port()
    bind = f"127.0.0.1:{port}"
    argv = {
        "gunicorn": [str(VENV_BIN / "gunicorn"), "-b", bind, APP],
        "gunicorn --preload": [str(VENV_BIN / "gunicorn"), "--preload", "-b", bind, APP],
        "flask run": [str(VENV_BIN / "flask"), "--app", "websocket_streaming", "run", "--port", str(port)],
    }[how]
    running = launch.start(how.replace(" ", "-"), argv, env, port)
    launch.wait_healthy(running)
    return running


@pytest.mark.parametrize("how", ["gunicorn", "gunicorn --preload", "flask run", "gunicorn -c gunicorn.conf.py"])
def test_every_way_of_serving_the_app_ingests_and_serves_a_fresh_price(
    live: FakeExchange, tmp_path: Path, how: str
) -> None:
    env = feed_env(live, tmp_path)
    with Launcher(tmp_path) as launch:
        if how.startswith("gunicorn -c"):
            service = launch.gunicorn("websocket-streaming", workers=1, **env)
        else:
            service = start_plain(launch, how, env)
        price = fresh_price(service)
        assert price["source"] == "websocket"
        status, health = http("GET", f"{service.url}/health")
        assert status == 200
        assert health["checks"]["ingest"] == {"status": "ok", "detail": "standalone"}
        assert health["checks"]["upstream"]["detail"]["connected"] is True
        # One serving process: its A and B connections (WS_CONNECTIONS=2, the default), no more.
        wait_until(lambda: live.open_connections() == 2, 10.0, "the A and B connections")
        time.sleep(0.5)
        assert len(live.connection_attempts) == 2


def test_preload_with_two_workers_ingests_in_each_worker_never_in_the_master(
    live: FakeExchange, tmp_path: Path
) -> None:
    env = {**feed_env(live, tmp_path), "WS_CONNECTIONS": "1"}  # one connection per ingest
    port = free_port()
    argv = [str(VENV_BIN / "gunicorn"), "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", APP]
    with Launcher(tmp_path) as launch:
        service = launch.start("preload-2", argv, env, port)
        launch.wait_healthy(service)

        def both_workers_ingest() -> bool:
            http("GET", f"{service.url}/health")  # a new TCP connection: either worker may take it
            return live.open_connections() == 2

        wait_until(both_workers_ingest, 20.0, "a connection from each worker")
        for _ in range(20):
            assert http("GET", f"{service.url}/health")[0] == 200
        assert live.open_connections() == 2  # never a third: the master does not ingest
        assert len(live.connection_attempts) == 2


FORK_SCRIPT = """
import os, sys, time
from websocket_streaming import create_app, get_service, start_ingest

app = create_app({"BINANCE_WS_URL": sys.argv[1], "SYMBOLS": ("BTCUSDT",), "WS_STREAMS": ("trade",),
                  "WS_CONNECTIONS": 1, "WS_BACKFILL_ENABLED": False, "REDIS_URL": None,
                  "RATE_LIMIT_ENABLED": False})
start_ingest(app)
while get_service(app).book.get("BTCUSDT") is None:
    time.sleep(0.02)
pid = os.fork()
if pid:
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
forked_at = time.time() * 1000
client = app.test_client()
for _ in range(500):
    answer = client.get("/price/BTCUSDT").get_json()  # 503 until its own connection delivers
    if answer.get("received_at", 0) > forked_at + 100:
        os._exit(0)
    time.sleep(0.02)
print("the forked process never got a price of its own", answer, flush=True)
os._exit(1)
"""


def test_a_process_forked_after_ingest_started_starts_its_own(live: FakeExchange, tmp_path: Path) -> None:
    env = {**feed_env(live, tmp_path), "WS_CONNECTIONS": "1"}
    script = textwrap.dedent(FORK_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-c", script, live.ws_url], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(live.connection_attempts) == 2  # the parent's, then the child's own
