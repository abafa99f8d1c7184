"""Issue 22 item 6: an idle connection closed by Redis `timeout` (or a NAT, or CLIENT KILL)
is retried once on a new connection: no fail-open decision, no "unreachable" log."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from sardag_testing.sentinel import RedisNode

from shared.rate_limiter import storage_from_url
from shared.rate_limiter.failover import FailoverBackend
from shared.redis_conn import redis_client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.redis]


@pytest.mark.parametrize("closed_by", ["server timeout", "client kill"])
def test_a_connection_closed_while_idle_is_not_an_outage(
    closed_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisNode(password=None, extra=("--timeout", "1")) as server:
        fallbacks: list[float] = []
        backend = storage_from_url(
            server.url, on_fallback=lambda: fallbacks.append(time.monotonic()), timeout=0.5
        )
        assert isinstance(backend, FailoverBackend)
        pooled = redis_client(server.url, timeout=0.5)
        assert backend.hit("idle", 3, 60.0).allowed
        assert pooled.incr("generation") == 1
        admin = redis.Redis(port=server.port)
        if closed_by == "client kill":
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 2
        else:
            time.sleep(2.5)  # `timeout 1`: the server closes both idle connections
            assert [c for c in admin.client_list() if c["cmd"] != "client|list"] == []
        caplog.set_level(logging.WARNING)
        assert [backend.hit("idle", 3, 60.0).allowed for _ in range(3)] == [True, True, False]
        assert pooled.incr("generation") == 2
        assert fallbacks == []
        assert not backend.degraded
        assert "unreachable" not in caplog.text
