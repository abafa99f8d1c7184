"""Fixtures of the fault suite: private servers to break, services under gunicorn, the fake exchange.

Every fault is injected into a server the test starts itself (`PrivatePostgres`,
`PrivateRedis`, gunicorn through `Launcher`), never into the machine's PostgreSQL or Redis.
Each test prints its figure (`-s` shows it; the README table quotes them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sardag_testing.processes import Launcher, Running
from sardag_testing.servers import PrivatePostgres, PrivateRedis

HERE = Path(__file__).resolve().parent
FEED_RATE = "20"  # fake exchange events per second per stream


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Starts services for one test and stops them all afterwards."""
    with Launcher(tmp_path) as started:
        yield started


@pytest.fixture
def private_postgres() -> Iterator[Callable[..., PrivatePostgres]]:
    """Factory: a started PostgreSQL cluster of the test's own (destroyed afterwards)."""
    clusters: list[PrivatePostgres] = []

    def start(**kwargs: object) -> PrivatePostgres:
        cluster = PrivatePostgres(**kwargs)  # type: ignore[arg-type]
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in clusters:
        cluster.destroy()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A started redis-server of the test's own."""
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def fake_exchange(launcher: Launcher) -> Running:
    """The fake Binance exchange (tools/fake-exchange), feeding a random walk."""
    return launcher.fake_exchange("--rate", FEED_RATE)


def streaming_env(fake: Running, **extra: str) -> dict[str, str]:
    """websocket-streaming's settings against the fake exchange."""
    return {
        "BINANCE_WS_URL": f"ws://127.0.0.1:{fake.port}",
        "BINANCE_REST_URL": f"http://127.0.0.1:{fake.port}",
        "SYMBOLS": "BTCUSDT,ETHUSDT",
        **extra,
    }


@pytest.fixture(scope="session")
def streaming_settings() -> Callable[..., dict[str, str]]:
    """`streaming_env` for test modules (importlib mode: they cannot import this file)."""
    return streaming_env


LONG_FORM = [
    pytest.mark.skipif(
        os.environ.get("RELIABILITY_LONG", "") != "1",
        reason="long form of a fault test: run with RELIABILITY_LONG=1 (the README table's figures)",
    )
]


@pytest.fixture(params=["short", pytest.param("long", marks=LONG_FORM)])
def form(request: pytest.FixtureRequest) -> str:
    """`short` (every run, CI included) or `long` (only with RELIABILITY_LONG=1)."""
    return str(request.param)
