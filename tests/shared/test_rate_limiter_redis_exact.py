"""On Redis, no window ever holds more than N allowed hits, even under a hot-key burst."""

from __future__ import annotations

import bisect
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.slow]

HAMMER = Path(__file__).with_name("redis_hammer.py")


def test_no_window_exceeds_the_limit_under_concurrent_bursts(clean_redis: str) -> None:
    limit, window_us = 3, 300
    command = [sys.executable, str(HAMMER), clean_redis, "burst", str(limit), str(window_us / 1e6), "2"]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    times = sorted(int(t) for out in outputs for t in out.split())
    assert len(times) > 100, "too few allowed hits to say anything"
    # every allowed hit at t: the allowed hits in [t, t + window) must number at most `limit`
    worst = max(bisect.bisect_right(times, t + window_us - 1) - i for i, t in enumerate(times))
    assert worst <= limit
