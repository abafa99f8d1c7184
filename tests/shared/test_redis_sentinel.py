"""Every Redis user of the shared library follows the master the sentinels name, through a failover."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from shared.gunicorn_hooks import check_sentinel_master
from shared.rate_limiter import FailoverBackend, storage_from_url
from shared.redis_conn import redis_client, unknown_master
from shared.testing import free_port, wait_until
from shared.testing.sentinel import RedisNode, SentinelStack

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack() -> Iterator[SentinelStack]:
    """A master, a replica and three sentinels of this module's own."""
    with SentinelStack() as started:
        yield started


def on(stack: SentinelStack, node: RedisNode) -> redis.Redis:
    """A plain client of one server of the stack."""
    return redis.Redis(port=node.port, password=stack.password, socket_timeout=1.0)


def test_limits_and_cached_values_live_on_the_master_and_follow_its_successor(stack: SentinelStack) -> None:
    backend = storage_from_url(stack.url, timeout=0.5)
    assert isinstance(backend, FailoverBackend)
    cache = redis_client(stack.url, timeout=0.5)
    master = stack.master()
    assert [backend.hit("sentinel-test", 100, 60.0).remaining for _ in range(3)] == [99, 98, 97]
    cache.set("sentinel-test:cached", "1")
    assert sum(on(stack, master).zcard(k) for k in on(stack, master).scan_iter("sardag:rl:*")) == 3
    assert on(stack, master).get("sentinel-test:cached") == b"1"
    stack.wait_replicating(next(n for n in stack.nodes if n is not master))
    wait_until(lambda: on(stack, stack.nodes[1 - stack.nodes.index(master)]).dbsize() == 2, 5.0, "replication")

    old = stack.kill_master()
    new = stack.wait_new_master(old)
    # back on Redis (the breaker probes every 0.5 s under Sentinel), on the new master,
    # with the window the replica had: the count goes on
    wait_until(
        lambda: not backend.degraded and backend.hit("probe", 100, 60.0).allowed, 10.0, "the limiter back"
    )
    wait_until(lambda: not backend.degraded, 5.0, "the breaker closed")
    assert backend.hit("sentinel-test", 100, 60.0).remaining == 96
    assert cache.get("sentinel-test:cached") == b"1"
    cache.set("sentinel-test:after", "2")
    assert on(stack, new).get("sentinel-test:after") == b"2"

    stack.restart(old)  # rejoins as a replica of the new master
    assert on(stack, old).execute_command("ROLE")[0] == b"slave"
    assert stack.master() is new


def test_a_master_name_the_sentinels_do_not_know_stops_the_start_with_one_line(
    stack: SentinelStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert unknown_master(stack.url) is None
    wrong = stack.url.replace(f"/{stack.master_name}/", "/no-such-master/")
    with pytest.raises(SystemExit) as stopped:
        check_sentinel_master(wrong)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("configuration error: REDIS_URL: no sentinel knows a master named 'no-such-master'")
    assert stack.password not in line
    # sentinels that do not answer: an outage, not a setting (the services start, fail open)
    assert unknown_master(f"redis+sentinel://127.0.0.1:{free_port()}/no-such-master", timeout=0.2) is None
