"""Microseconds per rate-limit check without HTTP: our backends next to `limits`' moving window."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from app import limits_url
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from shared.rate_limiter import FailoverBackend, MemoryBackend, RedisBackend
from shared.redis_conn import CircuitBreaker, redis_client

HIGH_LIMIT = 10_000_000
WINDOW = 60.0
Check = Callable[[], object]


@dataclass(frozen=True)
class MicroResult:
    """Per-round microseconds per check for one backend."""

    name: str
    rounds_us: list[float]
    rounds_cpu_us: list[float]

    @property
    def median_us(self) -> float:
        """The median wall time over rounds."""
        return statistics.median(self.rounds_us)

    @property
    def median_cpu_us(self) -> float:
        """The median CPU time of this process over rounds (waiting on Redis excluded)."""
        return statistics.median(self.rounds_cpu_us)


def ours_memory(url: str) -> Check:
    """Our in-process backend."""
    backend = MemoryBackend()
    return lambda: backend.hit("bench:127.0.0.1", HIGH_LIMIT, WINDOW)


def ours_redis(url: str) -> Check:
    """Our Redis backend alone (one Lua script per check)."""
    backend = RedisBackend(redis_client(url))
    return lambda: backend.hit("bench:127.0.0.1", HIGH_LIMIT, WINDOW)


def ours_failover(url: str) -> Check:
    """What apps really use with REDIS_URL: Redis behind the circuit breaker."""
    primary = RedisBackend(redis_client(url))
    backend = FailoverBackend(primary, MemoryBackend(), CircuitBreaker("bench"))
    return lambda: backend.hit("bench:127.0.0.1", HIGH_LIMIT, WINDOW)


def redis_ping(url: str) -> Check:
    """Calibration: one PING on the same client, the floor of any one-round-trip check."""
    return redis_client(url).ping


def limits_moving_window(storage_url: str) -> Check:
    """`limits`' moving window (what Flask-Limiter calls) on the given storage."""
    limiter = MovingWindowRateLimiter(storage_from_string(limits_url(storage_url)))
    item = RateLimitItemPerMinute(HIGH_LIMIT)
    return lambda: limiter.hit(item, "bench", "127.0.0.1")


BACKENDS: dict[str, Callable[[str], Check]] = {
    "ours MemoryBackend.hit": ours_memory,
    "ours RedisBackend.hit": ours_redis,
    "ours FailoverBackend.hit (redis)": ours_failover,
    "limits moving window, memory": lambda url: limits_moving_window("memory://"),
    "limits moving window, redis": limits_moving_window,
    "calibration: redis PING round trip": redis_ping,
}


def time_check(check: Check, iterations: int) -> tuple[float, float]:
    """Wall and CPU microseconds per call of `check`, after a short warm-up."""
    for _ in range(min(200, iterations)):
        check()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        check()
    wall_us = (time.perf_counter() - start) / iterations * 1e6
    return wall_us, (time.process_time() - cpu) / iterations * 1e6


def run_micro(url: str, iterations: int, rounds: int) -> list[MicroResult]:
    """Time every backend `rounds` times, interleaved, each round on empty stores."""
    client = redis.Redis.from_url(url)
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in BACKENDS}
    for _ in range(rounds):
        for name, factory in BACKENDS.items():
            client.flushdb()
            timings[name].append(time_check(factory(url), iterations))
    client.flushdb()
    return [MicroResult(name, [w for w, _ in t], [c for _, c in t]) for name, t in timings.items()]


def print_micro(results: list[MicroResult], iterations: int) -> None:
    """Print the µs-per-check table."""
    print(f"\nµs per check without HTTP (one key, {iterations} hits per round, median of rounds)")
    print(f"{'backend':<36} {'µs/check':>9} {'cpu µs':>7}  per-round µs/check")
    for r in results:
        rounds = " ".join(f"{v:.1f}" for v in r.rounds_us)
        print(f"{r.name:<36} {r.median_us:>9.1f} {r.median_cpu_us:>7.1f}  {rounds}")
