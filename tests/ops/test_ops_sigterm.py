"""SIGTERM during a burst of writes: requests in flight are answered, and every signal answered
2xx is in the database afterwards."""

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
from sardag_testing import scratch_postgres

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api, pytest.mark.database]

WRITERS = 8
BATCH_WRITERS = 2  # 200 signals a request: long requests, so some are mid-way at SIGTERM
BATCH_SIZE = 200
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

    def record(self, client_ids: list[str], status: int, body: Any, started: float) -> None:
        """One answer: its signals by client_id; in flight at SIGTERM when sent before it."""
        with self.lock:
            if 200 <= status < 300:
                signals = body["signals"] if isinstance(body, dict) and "signals" in body else [body]
                self.accepted.update(zip(client_ids, map(_signal_id, signals), strict=True))
                if self.sigterm_at is not None and started < self.sigterm_at:
                    self.answered_after_sigterm += 1  # sent before SIGTERM, answered after it
            else:
                self.other[status] = self.other.get(status, 0) + 1


def _signal_id(body: Any) -> Any:
    signal_body = body.get("signal", body) if isinstance(body, dict) else {}
    assert "id" in signal_body, f"2xx answer without an id: {body}"
    return signal_body["id"]


def _signal(burst: Burst, client_id: str, index: int) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "action": "BUY",
        "price": 90000 + index,
        "confidence": 0.5,
        "strategy": f"sigterm-{burst.marker}",
        "client_id": client_id,
    }


def _writer(ops: SimpleNamespace, url: str, burst: Burst, writer: int, deadline: float, size: int = 1) -> None:
    """Post signals (one per request, or batches of `size`) until `deadline` or the server goes."""
    for index in range(MAX_REQUESTS_PER_WRITER):
        if time.monotonic() > deadline:
            return
        client_ids = [f"{burst.marker}-{writer}-{index}-{n}" for n in range(size)]
        signals = [_signal(burst, client_id, index) for client_id in client_ids]
        started = time.monotonic()
        try:
            status, body = ops.http(
                "POST", f"{url}/signals/save", signals if size > 1 else signals[0], timeout=30
            )
        except OSError:
            with burst.lock:
                burst.unanswered += 1
            if burst.sigterm_at is not None:
                return  # the listener is closed: the server is going away
            continue
        burst.record(client_ids, status, body, started)


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
    threads += [
        threading.Thread(
            target=_writer, args=(ops, server.url, burst, WRITERS + n, deadline, BATCH_SIZE), daemon=True
        )
        for n in range(BATCH_WRITERS)
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
    # graceful: requests already sent when SIGTERM came were still answered, with success
    assert burst.answered_after_sigterm >= 1, (
        f"no request sent before SIGTERM was answered ({burst.unanswered} unanswered, {burst.other})"
    )
    _assert_all_stored(ops, launcher, env, burst)


def _assert_all_stored(ops: SimpleNamespace, launcher: Any, env: dict[str, str], burst: Burst) -> None:
    """Start the service again on the same database and read back every acknowledged signal."""
    server = launcher.gunicorn("database-service", workers=1, **env)
    stored: dict[str, Any] = {}
    cursor = ""
    while True:  # every signal of this burst, a page of 1000 at a time
        query = f"strategy=sigterm-{burst.marker}&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        status, page = ops.http("GET", f"{server.url}/signals/history?{query}", timeout=30)
        assert status == 200, page
        stored.update((s["client_id"], s["id"]) for s in page["signals"])
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    lost = [(c, i, stored.get(c)) for c, i in sorted(burst.accepted.items()) if stored.get(c) != i]
    summary = (
        f"{len(burst.accepted)} acknowledged, {burst.answered_after_sigterm} answered after SIGTERM, "
        f"{burst.unanswered} unanswered, other statuses {burst.other}"
    )
    assert not lost, f"acknowledged but not stored: {lost[:10]} ({summary})"
    print(summary)
