"""Hammer one Redis rate-limit key for a while; print the server time of every allowed hit.

Usage: python redis_hammer.py REDIS_URL KEY LIMIT WINDOW_SECONDS DURATION_SECONDS
"""

from __future__ import annotations

import sys
import time

from shared.rate_limiter.redis_backend import RedisBackend
from shared.redis_conn import redis_client


def main() -> None:
    """Hit the key until the duration is over, printing allowed hits' server times (µs)."""
    url, key, limit, window, duration = sys.argv[1:6]
    backend = RedisBackend(redis_client(url, timeout=2.0))
    deadline = time.monotonic() + float(duration)
    allowed: list[str] = []
    while time.monotonic() < deadline:
        ok, _, _, now = backend.decide(key, int(limit), float(window)).split()  # never the local cache
        if ok == b"1":
            allowed.append(now.decode())
    print(" ".join(allowed))


if __name__ == "__main__":
    main()
