"""/performance/stats cached in the real Redis: shared and invalidated across instances."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask

pytestmark = [pytest.mark.api, pytest.mark.database, pytest.mark.redis, pytest.mark.integration]

TRADE = {"symbol": "BTCUSDT", "entry_price": 100, "exit_price": 110}


def test_stats_cache_is_shared_by_instances(make_app: Callable[..., Flask], clean_redis: str) -> None:
    first = make_app(REDIS_URL=clean_redis).test_client()
    second = make_app(REDIS_URL=clean_redis).test_client()  # another worker or instance
    assert first.post("/performance/track", json=TRADE).status_code == 201
    assert first.get("/performance/stats").headers["X-Cache"] == "MISS"
    assert second.get("/performance/stats").headers["X-Cache"] == "HIT"
    keys = redis.Redis.from_url(clean_redis).keys("sardag:cache:database-service:stats:*")
    assert keys, "statistics were not cached in Redis"

    assert second.post("/performance/track", json=TRADE).status_code == 201
    after = first.get("/performance/stats")
    assert after.headers["X-Cache"] == "MISS"
    assert after.get_json()["total_trades"] == 2
