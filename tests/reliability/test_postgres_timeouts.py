"""PostgreSQL that stops answering: every request answered in time, and a 503 never stores a row.

A frozen server (every process SIGSTOPped: connections stay open, nothing answers) under
four kinds of writes: one signal without client_id, one with, a batch (COPY), a trade
(a transaction with the statistics buckets). Each write carries a marker of its own.
Must hold: every request answered (2xx or 503 + Retry-After) within DATABASE_TIMEOUT and a
little; after the server thaws and whatever it had buffered has run, no write answered 503
is stored, and every write answered 2xx is. A lock held elsewhere (the reported 8 s wait of
/performance/track) is given up after DATABASE_LOCK_TIMEOUT with a 503, and nothing stored.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sardag_testing.processes import Launcher
from sardag_testing.servers import PrivatePostgres
from sardag_testing.traffic import Answer, Client, Traffic, statuses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.api]

TIMEOUTS = {
    "DATABASE_CONNECT_TIMEOUT": "2",
    "DATABASE_STATEMENT_TIMEOUT": "1",
    "DATABASE_LOCK_TIMEOUT": "1",
    "DATABASE_TIMEOUT": "2",
}
ANSWER_LIMIT = float(TIMEOUTS["DATABASE_TIMEOUT"]) + 1.0  # the deadline, the watchdog's tick, HTTP
FROZEN_SECONDS = 6.0


def markers(answer: Answer) -> list[str]:
    """The strategy markers a write sent (kept on the answer's request: see `writes`)."""
    return list(answer.headers.get("x-test-markers", "").split(",")) if answer.headers else []


def writes(run: str) -> Callable[[Client, int], Answer]:
    """A step cycling through four kinds of write, each strategy a unique marker."""

    def step(client: Client, n: int) -> Answer:
        tag = f"{run}-{n}"
        signal: dict[str, Any] = {"symbol": "BTCUSDT", "action": "BUY", "price": 100, "strategy": tag}
        kind = n % 4
        if kind == 0:
            answer, sent = client.post("/signals/save", signal), [tag]
        elif kind == 1:
            answer, sent = client.post("/signals/save", {**signal, "client_id": tag}), [tag]
        elif kind == 2:
            batch = [{**signal, "strategy": f"{tag}-a"}, {**signal, "strategy": f"{tag}-b"}]
            answer, sent = client.post("/signals/save", batch), [f"{tag}-a", f"{tag}-b"]
        else:
            trade = {"symbol": "BTCUSDT", "side": "LONG", "entry_price": 100, "exit_price": 101, "quantity": 1}
            answer, sent = client.post("/performance/track", {**trade, "strategy": tag}), [tag]
        return Answer(
            answer.kind,
            answer.started,
            answer.elapsed,
            answer.status,
            {**answer.headers, "x-test-markers": ",".join(sent)},
            answer.body,
            answer.error,
        )

    return step


def stored_strategies(pg: PrivatePostgres) -> set[str]:
    """Every strategy stored, in signals and trades."""
    found = pg.execute("SELECT strategy FROM signals UNION ALL SELECT strategy FROM trades")
    return {str(row[0]) for row in found}


def polite(answer: Answer) -> bool:
    """2xx, or 503 `unavailable` with Retry-After."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return 200 <= answer.status < 300 or (
        answer.status == 503 and "retry-after" in answer.headers and body.get("error") == "unavailable"
    )


def test_frozen_postgres_answers_in_time_and_503_never_commits(
    launcher: Launcher, private_postgres: Callable[..., PrivatePostgres]
) -> None:
    pg = private_postgres()
    db = launcher.gunicorn(
        "database-service", workers=2, DATABASE_URL=pg.url, RATE_LIMIT_ENABLED="0", **TIMEOUTS
    )
    run = uuid.uuid4().hex[:8]
    with Traffic() as traffic:
        traffic.loop("write", writes(run), db.url, threads=4, timeout=15.0)
        time.sleep(2.0)
        frozen = pg.freeze()
        frozen_at = time.monotonic()
        time.sleep(FROZEN_SECONDS)
        pg.thaw(frozen)
        thawed_at = time.monotonic()
        time.sleep(3.0)
    time.sleep(1.0)  # whatever the server had buffered has run by now
    answers = traffic.answers()
    stored = stored_strategies(pg)

    during = [a for a in answers if a.started < thawed_at and a.ended > frozen_at]
    refused = [a for a in answers if a.status == 503]
    committed_after_503 = [a for a in refused if set(markers(a)) & stored]
    acked_missing = [a for a in answers if 200 <= a.status < 300 and not set(markers(a)) <= stored]
    slowest = max(a.elapsed for a in answers)
    # writes the server reached after the thaw, refused by sardag_commit_deadline
    refused_late = pg.logfile.read_text(errors="replace").count("the client stopped waiting for this write")
    print(
        f"\nfrozen postgres ({FROZEN_SECONDS:g} s, DATABASE_TIMEOUT={TIMEOUTS['DATABASE_TIMEOUT']} s): "
        f"{len(answers)} writes, statuses {statuses(answers)}, during the freeze {statuses(during)}, "
        f"slowest answer {slowest:.2f} s, 503 then stored {len(committed_after_503)}, "
        f"2xx not stored {len(acked_missing)}, refused by the server's deadline check {refused_late}"
    )
    assert during, "no write overlapped the freeze"
    assert all(polite(a) for a in answers), f"unexpected answers: {statuses(answers)}"
    assert slowest <= ANSWER_LIMIT, f"a request waited {slowest:.2f} s for the frozen server"
    assert not committed_after_503, (
        f"answered 503, stored anyway: {[markers(a) for a in committed_after_503][:5]}"
    )
    assert not acked_missing, f"answered 2xx, not stored: {[markers(a) for a in acked_missing][:5]}"
    assert any(200 <= a.status < 300 for a in answers if a.started > thawed_at + 1.0), "no write after the thaw"


def test_lock_held_elsewhere_gives_503_within_lock_timeout_and_stores_nothing(
    launcher: Launcher, private_postgres: Callable[..., PrivatePostgres]
) -> None:
    pg = private_postgres()
    db = launcher.gunicorn(
        "database-service", workers=1, DATABASE_URL=pg.url, RATE_LIMIT_ENABLED="0", **TIMEOUTS
    )
    client = Client(db.url, timeout=15.0)
    trade = {"symbol": "BTCUSDT", "side": "LONG", "entry_price": 100, "exit_price": 101, "quantity": 1}
    assert client.post("/performance/track", {**trade, "strategy": "before"}).status == 201
    holding = threading.Event()
    release = threading.Event()

    def hold_the_version_row() -> None:  # every trade's transaction updates this one row
        import psycopg2

        conn = psycopg2.connect(pg.url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT version FROM stats_version WHERE id = 1 FOR UPDATE")
                holding.set()
                release.wait(10)
            conn.rollback()
        finally:
            conn.close()

    holder = threading.Thread(target=hold_the_version_row)
    holder.start()
    try:
        assert holding.wait(10)
        answer = client.post("/performance/track", {**trade, "strategy": "blocked"})
    finally:
        release.set()
        holder.join()
    time.sleep(0.5)
    print(f"\nlock held elsewhere: {answer.status} after {answer.elapsed:.2f} s")
    assert answer.status == 503, answer
    assert "retry-after" in answer.headers
    assert answer.elapsed < float(TIMEOUTS["DATABASE_TIMEOUT"]), "waited past lock_timeout"
    assert "blocked" not in stored_strategies(pg)
    assert client.post("/performance/track", {**trade, "strategy": "after"}).status == 201
