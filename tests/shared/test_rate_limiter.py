"""The exact sliding-window limiter through HTTP, on both backends."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sardag_testing import FakeClock

from shared.rate_limiter import MemoryBackend, RateLimiter, get_limiter

pytestmark = pytest.mark.api


def test_55_requests_on_a_50_per_minute_route(client: FlaskClient) -> None:
    responses = [client.get("/limited") for _ in range(55)]
    assert [r.status_code for r in responses] == [200] * 50 + [429] * 5
    for i, response in enumerate(responses[:50]):
        assert response.headers["X-RateLimit-Limit"] == "50"
        assert response.headers["X-RateLimit-Remaining"] == str(49 - i)
    for response in responses[50:]:
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert int(response.headers["X-RateLimit-Reset"]) >= math.floor(time.time())
        assert response.get_json()["error"] == "rate_limited"
        assert response.get_json()["message"]


def test_retry_after_counts_down_to_when_the_oldest_request_leaves(client: FlaskClient) -> None:
    for _ in range(50):
        client.get("/limited")
    rejected = client.get("/limited")
    assert 59 <= int(rejected.headers["Retry-After"]) <= 60
    assert abs(int(rejected.headers["X-RateLimit-Reset"]) - (time.time() + 60)) <= 2


@pytest.mark.unit
def test_rejected_requests_do_not_count(make_app: Callable[..., Flask]) -> None:
    clock = FakeClock(5000.0)
    app = make_app(REDIS_URL=None)
    get_limiter(app).backend = MemoryBackend(clock=clock)
    client = app.test_client()
    assert all(client.get("/limited").status_code == 200 for _ in range(50))
    for _ in range(100):  # hammering while limited must not extend the wait
        clock.now += 0.5
        assert client.get("/limited").status_code == 429
    clock.now += 10.001  # 60.001 s after the first 50
    assert client.get("/limited").status_code == 200


@pytest.mark.unit
def test_window_slides_one_request_at_a_time_in_process(make_app: Callable[..., Flask]) -> None:
    clock = FakeClock(5000.0)
    app = make_app(REDIS_URL=None, RATE_LIMITS={"limited": 3})
    get_limiter(app).backend = MemoryBackend(clock=clock)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/limited").status_code == 200
        clock.now += 10
    assert client.get("/limited").status_code == 429  # t = 30: three in the window
    clock.now += 30.0  # t = 60: the first (t=0) is exactly 60 s old and has left
    assert [client.get("/limited").status_code for _ in range(2)] == [200, 429]
    clock.now += 10.0  # t = 70: the second (t=10) leaves
    assert [client.get("/limited").status_code for _ in range(2)] == [200, 429]


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.slow
def test_window_slides_on_redis(make_app: Callable[..., Flask], clean_redis: str) -> None:
    app = make_app(REDIS_URL=clean_redis, RATE_LIMITS={"limited": 3}, RATE_LIMIT_WINDOW_SECONDS=1.0)
    client = app.test_client()
    assert client.get("/limited").status_code == 200
    first = time.monotonic()  # taken after the answer: the first hit was counted before it
    time.sleep(0.4)
    assert [client.get("/limited").status_code for _ in range(2)] == [200, 200]
    assert client.get("/limited").status_code == 429
    time.sleep(max(0.0, first + 1.05 - time.monotonic()))  # only the first has left
    assert [client.get("/limited").status_code for _ in range(2)] == [200, 429]


def test_limits_are_per_client_address(client: FlaskClient) -> None:
    for _ in range(50):
        client.get("/limited", environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert client.get("/limited", environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 429
    assert client.get("/limited", environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200


def test_limits_are_per_route_scope(client: FlaskClient) -> None:
    for _ in range(50):
        client.get("/limited")
    assert client.get("/limited").status_code == 429
    assert client.get("/hundred").status_code == 200


def test_spoofed_forwarded_for_is_ignored_without_trusted_proxies(
    make_app: Callable[..., Flask], backend_config: dict[str, object]
) -> None:
    client = make_app(**backend_config, TRUSTED_PROXIES=0).test_client()
    statuses = [
        client.get("/limited", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(55)
    ]
    assert statuses == [200] * 50 + [429] * 5


def test_forwarded_for_is_the_key_behind_one_trusted_proxy(
    make_app: Callable[..., Flask], backend_config: dict[str, object]
) -> None:
    client = make_app(**backend_config, TRUSTED_PROXIES=1).test_client()
    statuses = [
        client.get("/limited", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(55)
    ]
    assert statuses == [200] * 55
    spoof = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}  # only the last hop is trusted
    assert all(client.get("/limited", headers=spoof).status_code == 200 for _ in range(50))
    other = {"X-Forwarded-For": "7.7.7.7, 198.51.100.7"}
    assert client.get("/limited", headers=other).status_code == 429


@pytest.mark.unit
def test_routes_without_a_decorator_get_the_default_limit(make_app: Callable[..., Flask]) -> None:
    client = make_app(REDIS_URL=None, RATE_LIMIT_DEFAULT=5).test_client()
    assert [client.get("/plain").status_code for _ in range(6)] == [200] * 5 + [429]
    assert client.get("/plain").headers["X-RateLimit-Limit"] == "5"
    assert all(client.get("/health").status_code == 200 for _ in range(10))


@pytest.mark.unit
def test_a_decorated_and_an_undecorated_route_answer_the_same_429(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL=None, RATE_LIMIT_DEFAULT=50)  # /limited's own limit is 50 too
    client = app.test_client()
    rejected = {}
    for path in ("/limited", "/plain"):
        statuses = [client.get(path).status_code for _ in range(50)]
        assert statuses == [200] * 50
        rejected[path] = client.get(path)
    decorated, undecorated = rejected["/limited"], rejected["/plain"]
    assert decorated.status_code == undecorated.status_code == 429
    assert decorated.get_data() == undecorated.get_data()  # the same bytes: one builder
    assert decorated.get_json()["error"] == "rate_limited"
    for response in (decorated, undecorated):
        assert response.content_type == "application/json"
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["X-RateLimit-Limit"] == "50"
        assert response.headers["X-RateLimit-Remaining"] == "0"
    assert sorted(decorated.headers.keys()) == sorted(undecorated.headers.keys())
    metrics = client.get("/metrics").get_data(as_text=True)
    for scope in ("limited", "plain"):
        assert f'sardag_rate_limited_total{{scope="{scope}",service="support-app"}} 1.0' in metrics


@pytest.mark.unit
def test_env_override_of_a_route_limit(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_LIMITED", "2")
    client = make_app(REDIS_URL=None).test_client()
    assert [client.get("/limited").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.unit
def test_limiting_can_be_switched_off(make_app: Callable[..., Flask]) -> None:
    client = make_app(REDIS_URL=None, RATE_LIMIT_ENABLED=False).test_client()
    responses = [client.get("/limited") for _ in range(60)]
    assert all(r.status_code == 200 for r in responses)
    assert "X-RateLimit-Limit" not in responses[0].headers


@pytest.mark.unit
def test_rejections_are_counted_in_metrics(memory_app: Flask) -> None:
    client = memory_app.test_client()
    for _ in range(53):
        client.get("/limited")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sardag_rate_limited_total{scope="limited",service="support-app"} 3.0' in text


@pytest.mark.unit
@pytest.mark.slow
def test_a_hundred_times_the_bound_in_distinct_keys_stays_within_it() -> None:
    backend = MemoryBackend(max_keys=1_000)
    for i in range(100_000):
        backend.hit(f"scope:{i}", 5, 60.0)
    assert len(backend) == 1_000
    assert backend.hit("scope:99999", 1, 60.0).allowed is False  # the newest keys survive
    assert backend.hit("scope:0", 1, 60.0).allowed is True  # the oldest were evicted


@pytest.mark.unit
def test_the_key_bound_comes_from_config(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL=None, RATE_LIMIT_MAX_KEYS=10)
    client = app.test_client()
    for i in range(50):
        client.get("/limited", environ_base={"REMOTE_ADDR": f"10.1.0.{i}"})
    assert len(get_limiter(app).backend) == 10  # type: ignore[arg-type]


@pytest.mark.unit
def test_in_process_backend_is_thread_safe() -> None:
    from concurrent.futures import ThreadPoolExecutor

    backend = MemoryBackend()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: backend.hit("k", 100, 60.0).allowed, range(1000)))
    assert sum(results) == 100


@pytest.mark.unit
def test_unknown_storage_url_is_refused() -> None:
    from shared.rate_limiter import storage_from_url

    with pytest.raises(ValueError, match="unknown rate-limit storage"):
        storage_from_url("mongodb://x")


@pytest.mark.unit
def test_extension_accepts_an_explicit_backend(make_app: Callable[..., Flask]) -> None:
    backend = MemoryBackend()
    limiter = RateLimiter(backend=backend)
    assert limiter.backend is backend
