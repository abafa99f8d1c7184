"""`python -m shared.rate_limiter`: a short self-check of both backends."""

from __future__ import annotations

import os
import uuid

from shared.rate_limiter.memory import MemoryBackend
from shared.rate_limiter.redis_backend import RedisBackend
from shared.redis_conn import REDIS_ERRORS, redis_client


class FakeClock:
    """A clock the self-check moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def check_backend(backend: MemoryBackend | RedisBackend, key: str) -> None:
    """55 hits against a limit of 50: exactly 50 allowed, then 429s with Retry-After >= 1."""
    results = [backend.hit(key, 50, 60.0) for _ in range(55)]
    allowed = sum(r.allowed for r in results)
    assert allowed == 50, allowed
    assert all(not r.allowed and int(r.retry_after_header) >= 1 for r in results[50:])
    print(f"  {backend.name}: 55 hits on a 50/min key -> {allowed} allowed, 5 rejected: ok")


def check_sliding(clock: FakeClock) -> None:
    """Once the oldest hit leaves the window exactly one more is allowed."""
    backend = MemoryBackend(clock=clock)
    for step in range(3):
        assert backend.hit("k", 3, 60.0).allowed
        clock.now += 10 if step < 2 else 0
    assert not backend.hit("k", 3, 60.0).allowed
    clock.now += 40.001  # the first hit (t=1000) leaves the window at t=1060
    assert [backend.hit("k", 3, 60.0).allowed for _ in range(2)] == [True, False]
    print("  memory: window slides by exactly one request: ok")


def check_bound() -> None:
    """The in-process store never holds more keys than its bound."""
    backend = MemoryBackend(max_keys=1000)
    for i in range(20_000):
        backend.hit(f"key-{i}", 5, 60.0)
    assert len(backend) == 1000, len(backend)
    print("  memory: 20,000 keys through a 1,000-key store -> 1,000 kept (LRU): ok")


def main() -> None:
    """Run every check and say what was verified."""
    print("rate limiter self-check")
    check_backend(MemoryBackend(), "self-check")
    check_sliding(FakeClock())
    check_bound()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    backend = RedisBackend(redis_client(url, timeout=1.0))
    try:
        check_backend(backend, f"self-check-{uuid.uuid4().hex}")
    except REDIS_ERRORS as exc:
        print(f"  redis ({url}): skipped, not reachable: {exc}")


if __name__ == "__main__":
    main()
