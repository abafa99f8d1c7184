"""Two leaders for a moment (the lock lost in a Redis failover) are harmless.

With asynchronous replication a promoted replica may lack the latest lock write: another
instance takes the lock while the old leader still counts on its lease. Every publish is
fenced by the lock on the Redis that now serves, so the old leader's batches are refused
and it steps down; no subscriber gets an update twice, and one leader's connection holds
the feed again. The lock loss is made here by writing the other instance's name into the
lock, which is what a replica that missed the write, then taken by the other, looks like.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis
from flask import Flask
from websocket_streaming import get_service
from websocket_streaming.fake_exchange import FakeExchange
from websocket_streaming.fake_exchange.drill import NumberedTrades, SseReader

from shared.testing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.websocket, pytest.mark.slow]


def test_a_lock_lost_in_a_failover_makes_two_leaders_for_a_moment_and_no_duplicate(
    fake: FakeExchange,
    redis_app: Callable[..., Flask],
    redis_url: str,
    prefix: str,
    serve: Callable[[Flask], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="websocket_streaming.redis")
    timing = {"WS_LEADER_LOCK_TTL_SECONDS": 3.0, "PRICE_STALE_SECONDS": 3.0}  # renewed every 1 s
    old = redis_app(**timing)
    wait_until(lambda: get_service(old).role == "leader", 5.0, "the first leader")
    other = redis_app(**timing)
    watcher = redis_app(INGEST_ENABLED=False, **timing)  # serves what the leader publishes
    wait_until(lambda: get_service(other).role == "follower", 5.0, "a follower")
    events = SseReader(serve(watcher)).start()
    trades = NumberedTrades(fake, rate=50).start()
    try:
        wait_until(lambda: len(events.received) >= 20, 5.0, "events through the leader")
        # the promoted replica missed the lock's last write, and the other instance took it there
        newcomer = get_service(other).bridge
        assert newcomer is not None
        redis.Redis.from_url(redis_url).set(f"{prefix}lock:websocket-streaming:upstream", newcomer.id, px=3000)
        wait_until(lambda: get_service(other).role == "leader", 5.0, "the other instance taking the lock")
        wait_until(lambda: get_service(old).role != "leader", 5.0, "the old leader stepping down")
        wait_until(
            lambda: len(events.received) >= len(trades.sent) // 2 + 50, 5.0, "events through the new leader"
        )
    finally:
        sent = trades.stop()
    received = events.wait_for(sent)
    stepped_down = [r.getMessage() for r in caplog.records if "lock" in r.getMessage()]
    # the old leader led on while the other held the lock: its publish (or renewal) was refused
    assert any("no longer ours" in m or "lost the upstream lock" in m for m in stepped_down), stepped_down
    assert len(received) == len(set(received)), "an update reached the subscriber twice"
    assert sent[-1] in received  # the new leader's feed reaches it
    wait_until(lambda: fake.open_connections() == 1, 10.0, "one leader's connection alone")
