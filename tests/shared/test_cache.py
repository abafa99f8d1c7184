"""The JSON cache on Redis and in-process, and its fallback while Redis is down."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from sardag_testing import free_port

from shared.redis_cache import Cache, LocalCache, cached, get_cache


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.integration]),
    ]
)
def cache_app(request: pytest.FixtureRequest, make_app: Callable[..., Flask]) -> Flask:
    """The support app with its cache on one backend."""
    url = request.getfixturevalue("clean_redis") if request.param == "redis" else None
    return make_app(REDIS_URL=url)


def test_set_get_delete_round_trip(cache_app: Flask) -> None:
    cache = get_cache(cache_app)
    cache.set("stats", {"win_rate": 0.4, "n": [1, 2]}, ttl=30)
    assert cache.get("stats") == {"win_rate": 0.4, "n": [1, 2]}
    cache.delete("stats")
    assert cache.get("stats") is None


def test_incr_is_a_shared_counter(cache_app: Flask) -> None:
    cache = get_cache(cache_app)
    assert [cache.incr("generation") for _ in range(3)] == [1, 2, 3]


def test_cached_decorator_calls_once_per_key(cache_app: Flask) -> None:
    calls: list[int] = []

    @cached(ttl=30)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    with cache_app.app_context():
        assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]


@pytest.mark.redis
@pytest.mark.integration
def test_values_expire_on_redis(make_app: Callable[..., Flask], clean_redis: str) -> None:
    cache = get_cache(make_app(REDIS_URL=clean_redis))
    cache.set("short", 1, ttl=30)  # long enough to read back on a loaded machine
    key = cache.prefix + "short"
    assert 0 < redis.Redis.from_url(clean_redis).pttl(key) <= 30_000  # the TTL is Redis's, in ms


@pytest.mark.unit
def test_local_cache_expires_and_evicts() -> None:
    now = [100.0]
    local = LocalCache(max_entries=2, clock=lambda: now[0])
    local.set("a", "1", ttl=10)
    local.set("b", "2", ttl=10)
    local.set("c", "3", ttl=10)
    assert local.get("a") is None  # least recently used went first
    now[0] += 11
    assert local.get("b") is None  # expired


@pytest.mark.unit
def test_unreachable_redis_falls_back_and_reports_degraded(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    cache = get_cache(app)
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}  # served in-process
    assert cache.incr("g") == 1
    client = app.test_client()
    assert client.get("/health").get_json()["checks"]["cache_redis"]["status"] == "degraded"
    assert 'component="cache"' in client.get("/metrics").get_data(as_text=True)


@pytest.mark.unit
def test_backend_name() -> None:
    assert Cache().backend == "memory"
