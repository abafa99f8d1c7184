"""Redis away under mixed load on both services (Redis mode, two workers each).

Must hold: zero 5xx (and no unanswered request); `/health` degraded during the outage and
healthy within 5 s after; no request waits longer than the configured Redis timeout; no
price answered during the outage or the 5 s after it is stale.
The timeout is set to 1 s here (REDIS_TIMEOUT_SECONDS; 50 ms by default) so that a request
that waited on Redis stands out from the machine's noise: the check is "under timeout +
0.8 s", which a request that waited twice (or without a timeout) cannot meet.

Faults: `stopped` (redis-server killed: connections refused, then a new empty server on
the same port) and `frozen` (SIGSTOP: connections hang until the timeout).
Short form: stopped 3 s, then frozen 3 s. Long form: 10 s each.

Besides the two loaded services, two one-worker database-service instances make two
failures deterministic: `quiet` gets nothing but /health polls (its /health must notice
Redis is away although no request of its own touched Redis), `lone` gets nothing but
/performance/stats (the first request after Redis froze uses both the limiter and the
cache, and must wait one timeout, not one per user of Redis).
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sardag_testing import wait_until
from sardag_testing.processes import Launcher, Running
from sardag_testing.servers import PrivateRedis
from sardag_testing.traffic import Answer, Client, Traffic, percentile, statuses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.redis, pytest.mark.api]

REDIS_TIMEOUT = 1.0
WAIT_MARGIN = 0.8
HEALTHY_WITHIN = 5.0
STALE_AFTER = 3.0  # PRICE_STALE_SECONDS: as long as the short form's outages, so a starved worker shows
OUTAGES = {"short": [("stopped", 3.0), ("frozen", 3.0)], "long": [("stopped", 10.0), ("frozen", 10.0)]}
HEALTH_KINDS = ("db-health", "ws-health", "quiet-health")
UNLIMITED = {
    name: "1000000"
    for name in (
        "RATE_LIMIT_DEFAULT",
        "RATE_LIMIT_SIGNALS_SAVE",
        "RATE_LIMIT_SIGNALS_HISTORY",
        "RATE_LIMIT_PRICE",
    )
}


@dataclass
class Outage:
    """One Redis outage on the monotonic clock."""

    kind: str
    start: float
    end: float  # the server answers again
    down: float  # seconds it was certainly away (a restart ends a little before `end`)


def break_redis(redis: PrivateRedis, kind: str, seconds: float) -> Outage:
    """Stop (kill) or freeze (SIGSTOP) the server for `seconds`, then bring it back."""
    assert redis.process is not None
    start = time.monotonic()
    if kind == "stopped":
        redis.stop()
        time.sleep(seconds)
        redis.start()
    else:
        redis.process.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        redis.process.send_signal(signal.SIGCONT)
    return Outage(kind, start, time.monotonic(), seconds)


def steps() -> dict[str, tuple[str, Callable[[Client, int], Answer], int]]:
    """kind -> (service, step, threads): writes, reads and statistics on one, prices on the other."""
    symbols = itertools.cycle(["BTCUSDT", "ETHUSDT"])

    def write(client: Client, n: int) -> Answer:
        return client.post("/signals/save", {"symbol": "BTCUSDT", "action": "HOLD", "price": 10 + n % 7})

    return {
        "db-write": ("db", write, 1),
        "db-read": ("db", lambda c, n: c.get("/signals/history?limit=10"), 1),
        "db-stats": ("db", lambda c, n: c.get("/performance/stats"), 1),
        "price": ("ws", lambda c, n: c.get(f"/price/{next(symbols)}"), 2),
        "db-health": ("db", lambda c, n: c.get("/health"), 1),
        "ws-health": ("ws", lambda c, n: c.get("/health"), 1),
        "quiet-health": ("quiet", lambda c, n: c.get("/health"), 1),
        "lone-stats": ("lone", lambda c, n: c.get("/performance/stats"), 1),
    }


def health(answer: Answer) -> str:
    """The `status` of a /health body."""
    return str(answer.body.get("status")) if isinstance(answer.body, dict) else f"HTTP {answer.status}"


def test_redis_outage_under_mixed_load(
    form: str,
    launcher: Launcher,
    private_redis: PrivateRedis,
    fake_exchange: Running,
    streaming_settings: Callable[..., dict[str, str]],
) -> None:
    common = {"REDIS_URL": private_redis.url, "REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT), **UNLIMITED}
    ws_env = streaming_settings(fake_exchange, PRICE_STALE_SECONDS=str(STALE_AFTER), **common)
    services = {
        "db": launcher.gunicorn("database-service", workers=2, **common),
        "ws": launcher.gunicorn("websocket-streaming", workers=2, **ws_env),
        "quiet": launcher.gunicorn("database-service", workers=1, **common),
        "lone": launcher.gunicorn("database-service", workers=1, **common),
    }
    wait_until(lambda: Client(services["ws"].url).get("/price/BTCUSDT").status == 200, 30, "a price")
    outages = []
    with Traffic() as traffic:
        for kind, (service, step, threads) in steps().items():
            traffic.loop(kind, step, services[service].url, threads=threads, pause=0.02)
        time.sleep(3.0)
        for fault, seconds in OUTAGES[form]:
            outages.append(break_redis(private_redis, fault, seconds))
            time.sleep(HEALTHY_WITHIN + 3.0)
    answers = traffic.answers()
    report(answers, outages)

    problems = violations(answers, outages)
    assert not problems, "\n".join(problems)


def violations(answers: list[Answer], outages: list[Outage]) -> list[str]:
    """Every way the answers break the contract (empty when they keep it)."""
    found = []
    failed = [a for a in answers if a.status >= 500 or a.status == 0]
    if failed:
        found.append(f"5xx or unanswered: {statuses(failed)} {failed[:3]}")
    for outage in outages:
        during = [a for a in answers if outage.start <= a.started <= outage.end]
        slow = [a for a in during if a.elapsed > REDIS_TIMEOUT + WAIT_MARGIN]
        if slow:
            found.append(f"{outage.kind}: requests waited longer than the Redis timeout: {slow[:3]}")
        prices = [
            a for a in answers if a.kind == "price" and outage.start <= a.started <= outage.end + HEALTHY_WITHIN
        ]
        stale = [
            a for a in prices if not (a.status == 200 and isinstance(a.body, dict) and a.body["stale"] is False)
        ]
        if not prices or stale:  # every worker ingests alone while the shared book is away (solo)
            found.append(f"{outage.kind}: {len(stale)} of {len(prices)} prices stale or missing: {stale[:2]}")
        for kind in HEALTH_KINDS:
            polls = [a for a in answers if a.kind == kind]
            # answered while Redis was away (a poll waiting on a frozen Redis gets its reply after SIGCONT)
            seen = {
                health(a)
                for a in polls
                if outage.start + 1.0 <= a.started and a.ended <= outage.start + outage.down
            }
            if seen != {"degraded"}:
                found.append(f"{outage.kind}: {kind} during the outage said {sorted(seen)}")
            after = outage.end + HEALTHY_WITHIN
            late = {health(a) for a in polls if after <= a.started and a.ended <= after + 2.5}
            if late != {"healthy"}:
                found.append(f"{outage.kind}: {kind} {HEALTHY_WITHIN:g} s after the outage said {sorted(late)}")
    return found


def report(answers: list[Answer], outages: list[Outage]) -> None:
    """The figure: statuses and latency per kind during each outage, and the health timeline."""
    print(f"\nredis outage: {len(answers)} requests, statuses {statuses(answers)}")
    for outage in outages:
        print(f"  {outage.kind} {outage.end - outage.start:.1f} s:")
        during = [a for a in answers if outage.start <= a.started <= outage.end]
        for kind in sorted({a.kind for a in during}):
            mine = [a for a in during if a.kind == kind]
            times = [a.elapsed for a in mine]
            print(
                f"    {kind}: {statuses(mine)}, p50 {percentile(times, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(times, 0.99) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
            )
        prices = [a.body for a in during if a.kind == "price" and isinstance(a.body, dict)]
        stale = [p for p in prices if p.get("stale")]
        oldest = max((float(p.get("age_seconds") or 0) for p in prices), default=0.0)
        print(f"    /price during the outage: {len(stale)} answers marked stale, oldest price {oldest:.1f} s")
        for kind in HEALTH_KINDS:
            print(f"    {kind}: {health_timeline(answers, kind, outage)}")


def health_timeline(answers: list[Answer], kind: str, outage: Outage) -> str:
    """When /health changed state, relative to the outage's start and end."""
    changes, last = [], None
    for answer in (a for a in answers if a.kind == kind and a.started >= outage.start - 1.0):
        state = health(answer)
        if state != last:
            offset = answer.started - (outage.end if answer.started > outage.end else outage.start)
            anchor = "after the end" if answer.started > outage.end else "after the start"
            changes.append(f"{state} {offset:+.2f} s {anchor}")
            last = state
    return ", ".join(changes[:8])
