"""`python -m shared.rate_limiter [REDIS_URL]`: a short self-check of the backends.

The in-process checks always run. Redis is checked only when a URL is given, as the
argument or in REDIS_URL (the argument wins); with neither, nothing is sent anywhere.
The Redis check uses one fresh key and deletes it afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid

from shared.rate_limiter.memory import MemoryBackend
from shared.rate_limiter.redis_backend import RedisBackend
from shared.redis_conn import REDIS_ERRORS, redis_client
from shared.secrets import redacted


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


def redis_target(argv: list[str], environ: dict[str, str]) -> tuple[str | None, str]:
    """The Redis URL to check and where it came from (argument, REDIS_URL, or nowhere)."""
    if argv:
        return argv[0], "the command line"
    url = environ.get("REDIS_URL", "").strip()
    return (url, "REDIS_URL") if url else (None, "")


def check_redis(url: str, source: str) -> None:
    """The 55-hit check on Redis, on a fresh key deleted afterwards."""
    shown = redacted({"REDIS_URL": url})["REDIS_URL"]
    backend = RedisBackend(redis_client(url, timeout=1.0))
    key = f"self-check-{uuid.uuid4().hex}"
    try:
        check_backend(backend, key)
        backend.client.delete(backend.prefix + key)
    except REDIS_ERRORS as exc:
        print(f"  redis ({shown}, from {source}): skipped, not reachable: {exc}")
        return
    print(f"  redis: checked {shown} (from {source}); its test key deleted")


def main(argv: list[str] | None = None) -> None:
    """Run every check and say what was verified, and what was not."""
    args = sys.argv[1:] if argv is None else argv
    print("rate limiter self-check")
    check_backend(MemoryBackend(), "self-check")
    check_sliding(FakeClock())
    check_bound()
    url, source = redis_target(args, dict(os.environ))
    if url is None:
        print("  redis: not checked (no URL given: `python -m shared.rate_limiter redis://...` or REDIS_URL)")
        return
    check_redis(url, source)


if __name__ == "__main__":
    main()
