"""PostgreSQL primary lost under load: Patroni promotes the standby, the service follows it.

The stack: etcd, Patroni, two PostgreSQL nodes (sardag_testing.patroni). database-service
(2 workers) has the multi-host DATABASE_URL (target_session_attrs=read-write) and
DATABASE_READ_URL (prefer-standby); a second instance has no read URL, for comparison.
4 writers save signals with client_ids and retry a refused one with the same client_id;
4 readers read history, one signal and stats from each instance. The primary's Patroni
and PostgreSQL are SIGKILLed; later the old primary is started again and must rejoin as a
standby by itself, and the next failover must work too.

Must hold: every answer 2xx or 503 with Retry-After (or, for a read of an acknowledged
signal, 404: the standby has not replayed it yet, or an asynchronous failover lost it);
with synchronous_mode no acknowledged write lost; never a duplicate row; no read failed
(5xx or no answer) on the instance with DATABASE_READ_URL.
Reported: seconds from each kill to the first 201, the same without synchronous_mode and
what it lost, reads failed without a read URL.
Short form: synchronous mode with two failovers, asynchronous with one. Long form: three each.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import pytest
from sardag_testing import wait_until
from sardag_testing.patroni import TTL, PatroniCluster
from sardag_testing.processes import Launcher, Running
from sardag_testing.traffic import Answer, Client, Traffic, statuses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.api]

WRITERS = 4
READERS = 4
FAILOVERS = {"short": {True: 2, False: 1}, "long": {True: 3, False: 3}}
# Patroni's floor for ttl is 20 s: a standby may take over only once the dead leader's key
# expired. The first 201 must come within that, plus the promotion and the service's retry.
FIRST_WRITE_LIMIT = TTL + 10.0


@dataclass
class Failover:
    """One kill of the primary, on the monotonic clock."""

    old: str
    new: str
    killed: float
    first_write: float = 0.0  # end of the first 201 after the kill


class Writer:
    """Saves signals; a write answered anything but 2xx is retried with the same client_id."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.pending: dict[int, str] = {}  # per client thread: the client_id not yet stored

    def __call__(self, client: Client, n: int) -> Answer:
        """One attempt."""
        client_id = self.pending.setdefault(id(client), f"{self.marker}-{n}")
        answer = client.post(
            "/signals/save", {"symbol": "BTCUSDT", "action": "BUY", "price": 100 + n, "client_id": client_id}
        )
        if 200 <= answer.status < 300:
            del self.pending[id(client)]
        else:
            time.sleep(0.1)
        return answer


def reader(acked: Callable[[], dict[str, int]]) -> Callable[[Client, int], Answer]:
    """A step that reads history, one acknowledged signal, or the statistics, in turn."""

    def step(client: Client, n: int) -> Answer:
        if n % 3 == 0:
            return client.get("/signals/history?limit=5")
        if n % 3 == 1:
            ids = list(acked().values())
            return client.get(f"/signals/{ids[n % len(ids)]}" if ids else "/signals/history?limit=1")
        return client.get("/performance/stats")

    return step


def acknowledged(answers: list[Answer]) -> dict[str, int]:
    """client_id -> id of every signal answered 2xx."""
    return {a.body["client_id"]: a.body["id"] for a in answers if a.kind == "write" and 200 <= a.status < 300}


def missed(answer: Answer) -> bool:
    """A read of an acknowledged signal answered 404: a standby behind, or the write lost."""
    return answer.kind != "write" and answer.status == 404


def failed(answer: Answer) -> bool:
    """No answer, or 5xx: the read was not served at all."""
    return answer.status == 0 or answer.status >= 500


def refused_politely(answer: Answer) -> bool:
    """A 503 `unavailable` with Retry-After."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return answer.status == 503 and "retry-after" in answer.headers and body.get("error") == "unavailable"


@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous"])
def test_primary_killed_under_load(form: str, synchronous: bool, launcher: Launcher) -> None:
    with PatroniCluster(synchronous_mode=synchronous) as cluster:
        common = {"RATE_LIMIT_ENABLED": "0", "DATABASE_URL": cluster.url()}
        with_reads = launcher.gunicorn(
            "database-service", workers=2, DATABASE_READ_URL=cluster.read_url(), **common
        )
        primary_only = launcher.gunicorn("database-service", workers=2, **common)
        marker = uuid.uuid4().hex[:10]
        failovers: list[Failover] = []
        with Traffic() as traffic:
            acked = lambda: acknowledged(traffic.answers("write"))  # noqa: E731
            traffic.loop("write", Writer(marker), with_reads.url, threads=WRITERS)
            traffic.loop("read", reader(acked), with_reads.url, threads=READERS, pause=0.02)
            traffic.loop("read-primary", reader(acked), primary_only.url, threads=READERS, pause=0.02)
            for _ in range(FAILOVERS[form][synchronous]):
                wait_until(lambda: len(acked()) >= 40 * (len(failovers) + 1), 60, "acknowledged writes")
                failovers.append(fail_over(cluster, traffic))
            time.sleep(1.0)
        answers = traffic.answers()
        stored = rows(cluster.url())
    report(synchronous, answers, failovers, stored)
    check(synchronous, answers, failovers, stored, with_reads, primary_only)


def fail_over(cluster: PatroniCluster, traffic: Traffic) -> Failover:
    """Kill the primary; wait for the first 201; start the old primary; wait until it streams."""
    old = cluster.wait_leader()
    cluster.kill(old)
    event = Failover(old.name, "", time.monotonic())  # every process of it is gone by now
    event.new = cluster.wait_leader(other_than=old, timeout=FIRST_WRITE_LIMIT).name

    def first_write() -> float:
        ends = [a.ended for a in traffic.answers("write") if a.started >= event.killed and a.status == 201]
        return min(ends, default=0.0)

    event.first_write = wait_until(first_write, FIRST_WRITE_LIMIT, "a 201 after the failover")
    cluster.start_node(old)  # no manual step: Patroni rewinds it and makes it a standby
    cluster.wait_streaming(old)
    if cluster.synchronous_mode:
        wait_until(lambda: cluster.sync_standby() is old, 60, "the old primary as synchronous standby")
    return event


def rows(url: str) -> list[tuple[str, int]]:
    """(client_id, id) of every signal on the primary."""
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT client_id, id FROM signals WHERE client_id IS NOT NULL")
            return [(str(k), int(i)) for k, i in cur.fetchall()]
    finally:
        conn.close()


def lost_and_duplicated(answers: list[Answer], stored: list[tuple[str, int]]) -> tuple[dict[str, int], int]:
    """Acknowledged writes not stored as answered, and client_ids stored more than once."""
    by_key = dict(stored)
    lost = {k: v for k, v in acknowledged(answers).items() if by_key.get(k) != v}
    return lost, len(stored) - len(by_key)


def report(
    synchronous: bool, answers: list[Answer], failovers: list[Failover], stored: list[tuple[str, int]]
) -> None:
    """The figures (README table)."""
    lost, duplicates = lost_and_duplicated(answers, stored)
    writes = [a for a in answers if a.kind == "write"]
    mode = "synchronous_mode" if synchronous else "asynchronous"
    print(
        f"\npatroni failover ({mode}): {len(writes)} writes, {len(acknowledged(answers))} acknowledged, "
        f"{len(lost)} acknowledged lost, {duplicates} duplicates, write statuses {statuses(writes)}"
    )
    for event in failovers:
        took = event.first_write - event.killed
        print(f"  {event.old} killed -> {event.new}: first 201 {took:.1f} s after the kill")
    for kind, label in (("read", "with DATABASE_READ_URL"), ("read-primary", "without a read URL")):
        reads = [a for a in answers if a.kind == kind]
        down = [a for a in reads if failed(a)]
        behind = [a for a in reads if missed(a)]
        summary = f"failed {len(down)} {statuses(down)}, 404 (behind or lost) {len(behind)}"
        print(f"  reads {label}: {len(reads)}, {summary}")


def check(
    synchronous: bool,
    answers: list[Answer],
    failovers: list[Failover],
    stored: list[tuple[str, int]],
    with_reads: Running,
    primary_only: Running,
) -> None:
    """What must hold whatever the mode."""
    wrong = [a for a in answers if not (200 <= a.status < 300 or refused_politely(a) or missed(a))]
    assert not wrong, f"answers other than 2xx or 503 with Retry-After: {statuses(wrong)} {wrong[:3]}"
    lost, duplicates = lost_and_duplicated(answers, stored)
    assert duplicates == 0, "a client_id retried after a 503 was stored twice"
    if synchronous:
        assert not lost, f"{len(lost)} acknowledged writes lost: {list(lost.items())[:5]}"
    for event in failovers:
        assert event.first_write - event.killed <= FIRST_WRITE_LIMIT, f"no 201 in time after {event}"
    failed_reads = [a for a in answers if a.kind == "read" and failed(a)]
    assert not failed_reads, (
        f"reads failed despite DATABASE_READ_URL: {statuses(failed_reads)} {failed_reads[:3]}"
    )
    for service in (with_reads, primary_only):
        assert "Traceback" not in service.log_text(), service.log_tail()
