"""Over-limit keys are rejected locally until their first slot frees; Redis decides every admission."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))

from sardag_testing import FakeClock
from sardag_testing.servers import PrivateRedis
from support_app import BASE_CONFIG, create_app

from shared.rate_limiter import RateLimitResult
from shared.rate_limiter.redis_backend import OverLimitCache


def _rejected(limit: int = 5, retry_after: float = 10.0) -> RateLimitResult:
    return RateLimitResult(False, limit, 0, 1_700_000_010.0, retry_after)


@pytest.mark.unit
def test_a_rejection_is_repeated_locally_until_the_slot_frees() -> None:
    clock = FakeClock(100.0)
    cache = OverLimitCache(clock=clock)
    cache.add("scope:10.0.0.1", _rejected(retry_after=10.0), asked_at=99.5)  # asked before the answer
    clock.now = 109.0
    local = cache.get("scope:10.0.0.1", 5)
    assert local == RateLimitResult(False, 5, 0, 1_700_000_010.0, pytest.approx(0.5))
    assert local is not None
    assert local.retry_after_header == "1"
    clock.now = 109.5  # the deadline counts from when the store was asked: never past the real one
    assert cache.get("scope:10.0.0.1", 5) is None
    assert len(cache) == 0


@pytest.mark.unit
def test_other_keys_and_a_changed_limit_go_to_the_store() -> None:
    cache = OverLimitCache(clock=FakeClock(100.0))
    cache.add("scope:10.0.0.1", _rejected(limit=5), asked_at=100.0)
    assert cache.get("scope:10.0.0.2", 5) is None
    assert cache.get("other:10.0.0.1", 5) is None
    assert cache.get("scope:10.0.0.1", 6) is None  # e.g. a new limit from config


@pytest.mark.unit
def test_the_cache_is_bounded() -> None:
    clock = FakeClock(100.0)
    cache = OverLimitCache(max_keys=100, clock=clock)
    for i in range(1000):
        cache.add(f"k{i}", _rejected(retry_after=60.0), asked_at=clock.now)
    assert len(cache) <= 100
    assert cache.get("k999", 5) is not None  # the newest are kept
    clock.now += 61
    cache.add("late", _rejected(retry_after=60.0), asked_at=clock.now)  # expired entries make room first
    assert len(cache) <= 100
    assert cache.get("late", 5) is not None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own: the test stops it."""
    with PrivateRedis() as server:
        yield server


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.redis
def test_an_over_limit_client_is_answered_without_redis(private_redis: PrivateRedis) -> None:
    app = create_app({**BASE_CONFIG, "REDIS_URL": private_redis.url})
    client = app.test_client()
    assert [client.get("/limited").status_code for _ in range(51)] == [200] * 50 + [429]
    private_redis.stop()  # from now on a request that reached Redis would fail open (200)
    answers = [client.get("/limited") for _ in range(200)]
    assert {a.status_code for a in answers} == {429}
    assert all(58 <= int(a.headers["Retry-After"]) <= 60 for a in answers)
    assert all(a.headers["X-RateLimit-Remaining"] == "0" for a in answers)
    assert all(a.get_json()["error"] == "rate_limited" for a in answers)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'sardag_rate_limited_total{scope="limited",service="support-app"} 201.0' in metrics
    no_fallback = 'sardag_redis_fallback_total{component="rate_limiter",service="support-app"} 0.0'
    assert no_fallback in metrics  # no request tried Redis
    assert client.get("/hundred").status_code == 200  # another route: Redis is asked, fails open


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.redis
def test_admissions_stay_with_redis_across_two_apps(private_redis: PrivateRedis) -> None:
    # two workers' apps: one finds the key over its limit, the other still asks Redis
    config = {**BASE_CONFIG, "REDIS_URL": private_redis.url}
    first, second = create_app(config).test_client(), create_app(config).test_client()
    assert [first.get("/limited").status_code for _ in range(30)] == [200] * 30
    assert [second.get("/limited").status_code for _ in range(25)] == [200] * 20 + [429] * 5
    assert [first.get("/limited").status_code for _ in range(5)] == [429] * 5
    keys = redis.Redis.from_url(private_redis.url)
    assert sum(keys.zcard(k) for k in keys.scan_iter("sardag:rl:*")) == 50
