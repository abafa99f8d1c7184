"""A Redis master killed under load: the rate limiter and the cache follow Sentinel's new master.

Figures (printed; `-s` shows them): the fail-open window (seconds during which a worker's
limits were decided in-process because the shared store failed) and the exactness on the
promoted master (limit + 5 requests -> exactly limit admitted).
"""

from __future__ import annotations

import threading
import time

import pytest
from sardag_testing.sentinel import SentinelStack

from shared.rate_limiter import storage_from_url
from shared.rate_limiter.failover import FailoverBackend
from shared.redis_conn import CircuitBreaker, redis_client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.redis]

FAIL_OPEN_GOAL = 5.0
LIMIT = 10


def test_rate_limiter_and_cache_follow_a_failover_with_a_short_fail_open_window() -> None:
    with SentinelStack(password="ha-s3cret") as stack:
        fallbacks: list[float] = []
        backend = storage_from_url(
            stack.url, on_fallback=lambda: fallbacks.append(time.monotonic()), timeout=0.2
        )
        assert isinstance(backend, FailoverBackend)
        cache = redis_client(stack.url, timeout=0.2)
        assert cache.incr("stats_version") == 1
        stop = threading.Event()
        decided: list[float] = []

        def load() -> None:
            while not stop.is_set():
                backend.hit("load", 1_000_000, 60.0)
                decided.append(time.monotonic())
                time.sleep(0.005)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        time.sleep(0.5)
        killed_at = time.monotonic()
        old = stack.kill_master()
        promoted_at = stack.wait_failover()
        time.sleep(4.0)  # longer than the breaker's reprobe: the worker is back on Redis
        stop.set()
        worker.join(5)

        assert not backend.degraded
        assert fallbacks, "the kill was never noticed: the test did not test a failover"
        window = fallbacks[-1] - fallbacks[0]
        print(
            f"\nredis failover: sentinels promoted after {promoted_at - killed_at:.2f} s;"
            f" fail-open window {window:.2f} s ({len(fallbacks)} of {len(decided)} decisions in-process)"
        )
        assert window <= FAIL_OPEN_GOAL
        admitted = sum(backend.hit("exact", LIMIT, 60.0).allowed for _ in range(LIMIT + 5))
        assert admitted == LIMIT
        assert cache.incr("stats_version") >= 2  # the cache's generation counter lives on the new master
        assert stack.master.port != old.port
        assert stack.master_port() == stack.master.port


def test_limits_stay_exact_when_the_old_master_rejoins_as_replica() -> None:
    with SentinelStack() as stack:
        backend = storage_from_url(stack.url, timeout=0.2, breaker=CircuitBreaker("rate limiter", 0.2))
        assert backend.hit("warm", 5, 60.0).allowed
        stack.kill_master()
        stack.wait_failover()
        stack.rejoin_old_master()
        deadline = time.monotonic() + 10
        while backend.hit("probe", 1_000_000, 60.0) and backend.degraded and time.monotonic() < deadline:
            time.sleep(0.1)
        admitted = sum(backend.hit("after-rejoin", LIMIT, 60.0).allowed for _ in range(LIMIT + 5))
        assert admitted == LIMIT
