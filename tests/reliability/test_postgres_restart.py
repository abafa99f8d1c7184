"""PostgreSQL restarted (stop, 3 s, start) under 4 concurrent writers.

Must hold: every write answered 2xx is stored; during the outage only 2xx or 503 with
Retry-After; writes succeed again within 5 s of the server's return, with no service restart.
Short form: one restart (`pg_ctl stop -m fast`). Long form: three, the second a crash
(`-m immediate`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sardag_testing import wait_until
from sardag_testing.processes import Launcher
from sardag_testing.servers import PrivatePostgres
from sardag_testing.traffic import Answer, Client, Traffic, statuses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.api]

WRITERS = 4
DOWN_SECONDS = 3.0
RECOVERY_LIMIT = 5.0
STOP_MODES = {"short": ["fast"], "long": ["fast", "immediate", "fast"]}


@dataclass
class Restart:
    """One stop/start of the server, on the monotonic clock."""

    mode: str
    stopped: float
    back: float
    recovered: float = 0.0  # start of the first write answered 2xx after `back`


def writer(marker: str) -> Callable[[Client, int], Answer]:
    """A step that saves one signal with a unique client_id (and waits a little after a refusal)."""

    def step(client: Client, n: int) -> Answer:
        body = {"symbol": "BTCUSDT", "action": "BUY", "price": 1000 + n, "client_id": f"{marker}-{n}"}
        answer = client.post("/signals/save", body)
        if answer.status != 201:
            time.sleep(0.05)  # a client backs off a little; the figure counts requests, not spin
        return answer

    return step


def refused_politely(answer: Answer) -> bool:
    """A 503 `unavailable` with Retry-After: what a client may get while the database is away."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return answer.status == 503 and "retry-after" in answer.headers and body.get("error") == "unavailable"


def acknowledged(answers: list[Answer]) -> dict[str, int]:
    """client_id -> id of every signal answered 2xx."""
    return {a.body["client_id"]: a.body["id"] for a in answers if 200 <= a.status < 300}


def test_postgres_restart_under_four_writers(
    form: str, launcher: Launcher, private_postgres: Callable[..., PrivatePostgres]
) -> None:
    pg = private_postgres()
    db = launcher.gunicorn("database-service", workers=2, DATABASE_URL=pg.url, RATE_LIMIT_ENABLED="0")
    marker = uuid.uuid4().hex[:10]
    restarts: list[Restart] = []
    with Traffic() as traffic:
        traffic.loop("write", writer(marker), db.url, threads=WRITERS)
        for mode in STOP_MODES[form]:
            wait_until(lambda: len(acknowledged(traffic.answers())) >= 40 * (len(restarts) + 1), 30, "writes")
            restarts.append(restart(pg, mode, traffic))
        time.sleep(2.0)
    answers = traffic.answers()
    report(answers, restarts)

    wrong = [a for a in answers if not (200 <= a.status < 300 or refused_politely(a))]
    assert not wrong, f"answers other than 2xx or 503 with Retry-After: {statuses(wrong)} {wrong[:3]}"
    for event, following in zip(restarts, [*restarts[1:], None], strict=True):
        assert event.recovered - event.back <= RECOVERY_LIMIT, f"writes failed too long after {event}"
        until = following.stopped if following else math.inf
        late = [a for a in answers if event.back + RECOVERY_LIMIT <= a.started < until and a.status != 201]
        assert not late, f"writes still failing 5 s after the server's return: {late[:3]}"
    stored = {row[0]: row[1] for row in pg.execute("SELECT client_id, id FROM signals")}
    acked = acknowledged(answers)
    lost = {k: v for k, v in acked.items() if stored.get(k) != v}
    assert not lost, f"{len(lost)} acknowledged writes not stored: {list(lost.items())[:5]}"


def restart(pg: PrivatePostgres, mode: str, traffic: Traffic) -> Restart:
    """Stop the server, wait DOWN_SECONDS, start it; wait for the first successful write."""
    stopped = time.monotonic()
    pg.stop(mode)
    time.sleep(DOWN_SECONDS)
    pg.start()
    event = Restart(mode, stopped, time.monotonic())

    def first_success() -> float:
        after = [a.started for a in traffic.answers() if a.started >= event.back and a.status == 201]
        return min(after, default=0.0)

    event.recovered = wait_until(first_success, 30, "a successful write after the restart")
    return event


def report(answers: list[Answer], restarts: list[Restart]) -> None:
    """The figure: answers by status, during each outage, and the recovery time."""
    acked = len(acknowledged(answers))
    print(f"\npostgres restart: {len(answers)} writes, {acked} acknowledged, statuses {statuses(answers)}")
    for event in restarts:
        during = [a for a in answers if a.started <= event.back and a.ended >= event.stopped]
        print(
            f"  stop -m {event.mode}: {event.back - event.stopped:.1f} s down, during it {statuses(during)}, "
            f"first 2xx {event.recovered - event.back:.2f} s after the server's return"
        )
