"""SIGTERM during a burst of writes: every signal answered 2xx is in the database afterwards."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.testing import scratch_postgres

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api, pytest.mark.database]

WRITERS = 8
MAX_REQUESTS_PER_WRITER = 400
BURST_SECONDS = 20.0
SIGNAL_AFTER_ANSWERS = 60


@dataclass
class Burst:
    """Answers collected by the writer threads."""

    marker: str
    accepted: dict[str, Any] = field(default_factory=dict)  # client_id -> signal id
    other: dict[int, int] = field(default_factory=dict)  # status -> count
    unanswered: int = 0
    answered_after_sigterm: int = 0
    sigterm_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, client_id: str, status: int, body: Any, started: float) -> None:
        with self.lock:
            if 200 <= status < 300:
                self.accepted[client_id] = _signal_id(body)
            else:
                self.other[status] = self.other.get(status, 0) + 1
            if self.sigterm_at is not None and started < self.sigterm_at:
                self.answered_after_sigterm += 1


def _signal_id(body: Any) -> Any:
    signal_body = body.get("signal", body) if isinstance(body, dict) else {}
    assert "id" in signal_body, f"2xx answer without an id: {body}"
    return signal_body["id"]


def _writer(ops: SimpleNamespace, url: str, burst: Burst, writer: int, deadline: float) -> None:
    for index in range(MAX_REQUESTS_PER_WRITER):
        if time.monotonic() > deadline:
            return
        client_id = f"{burst.marker}-{writer}-{index}"
        payload = {
            "symbol": "BTCUSDT",
            "action": "BUY",
            "price": 90000 + index,
            "confidence": 0.5,
            "strategy": f"sigterm-{burst.marker}",
            "client_id": client_id,
        }
        started = time.monotonic()
        try:
            status, body = ops.http("POST", f"{url}/signals/save", payload, timeout=30)
        except OSError:
            with burst.lock:
                burst.unanswered += 1
            if burst.sigterm_at is not None:
                return  # the listener is closed: the server is going away
            continue
        burst.record(client_id, status, body, started)


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped afterwards."""
    with scratch_postgres(postgres_url, "sardag_ops") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sigterm.db'}"
    return str(request.getfixturevalue("fresh_postgres"))


def test_sigterm_during_write_burst_loses_no_acknowledged_signal(
    ops: SimpleNamespace, launcher: Any, database_url: str
) -> None:
    env = {"DATABASE_URL": database_url, "RATE_LIMIT_ENABLED": "0", "GRACEFUL_TIMEOUT": "20"}
    server = launcher.gunicorn("database-service", workers=2, **env)
    burst = Burst(marker=uuid.uuid4().hex[:12])
    deadline = time.monotonic() + BURST_SECONDS
    threads = [
        threading.Thread(target=_writer, args=(ops, server.url, burst, n, deadline), daemon=True)
        for n in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    ops.wait_until(lambda: len(burst.accepted) >= SIGNAL_AFTER_ANSWERS, 30, "the first answers")
    burst.sigterm_at = time.monotonic()
    exit_code = server.stop(timeout=40)
    for thread in threads:
        thread.join(BURST_SECONDS + 35)
    assert exit_code == 0, f"gunicorn exited with {exit_code}:\n{server.log_tail()}"
    assert not [s for s in burst.other if s >= 500], f"5xx during shutdown: {burst.other}"
    _assert_all_stored(ops, launcher, env, burst)


def _assert_all_stored(ops: SimpleNamespace, launcher: Any, env: dict[str, str], burst: Burst) -> None:
    """Start the service again on the same database and read back every acknowledged signal."""
    server = launcher.gunicorn("database-service", workers=1, **env)
    lost = []
    for client_id, signal_id in sorted(burst.accepted.items()):
        status, body = ops.http("GET", f"{server.url}/signals/{signal_id}", timeout=10)
        if status != 200 or body.get("client_id") != client_id:
            lost.append((client_id, signal_id, status))
    summary = (
        f"{len(burst.accepted)} acknowledged, {burst.answered_after_sigterm} answered after SIGTERM, "
        f"{burst.unanswered} unanswered, other statuses {burst.other}"
    )
    assert not lost, f"acknowledged but not stored: {lost[:10]} ({summary})"
    print(summary)
