"""Redis outages: no worker serves stale prices, one leader's feed comes back after.

While Redis is away every worker ingests on its own connection (role `solo`, one
connection each); once Redis returns, one leader holds the feed again (`WS_CONNECTIONS`
connections: the A/B pair by default). A leader cut off from Redis never
publishes into a Redis another instance leads. The outages are of private redis-servers
(`PrivateRedis`) or of a proxy of the test's own, never of a shared server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from fake_exchange import FakeExchange
from flask import Flask
from sardag_testing import repeating, wait_until
from sardag_testing.processes import Launcher, Running, http
from sardag_testing.servers import PrivateRedis
from websocket_streaming import get_service
from websocket_streaming.settings import SETTINGS

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.websocket, pytest.mark.slow]
# The leader's feed under the default settings: WS_CONNECTIONS connections (A and B).
FEED = next(int(s.default) for s in SETTINGS if s.name == "WS_CONNECTIONS")


@dataclass
class Sample:
    """One answer: when (monotonic), status, body."""

    at: float
    status: int
    body: Any

    @property
    def fresh(self) -> bool:
        """A 200 price answer that is not stale."""
        return self.status == 200 and isinstance(self.body, dict) and self.body.get("stale") is False


class Sampler:
    """Reads `rate` times a second while the `with` block runs, like a client polling."""

    def __init__(self, read: Callable[[], tuple[int, Any]], rate: float = 20.0) -> None:
        self.read = read
        self.rate = rate
        self.samples: list[Sample] = []

    def running(self) -> AbstractContextManager[None]:
        """Sample while the `with` block runs."""
        return repeating(self.sample, 1 / self.rate)

    def sample(self) -> None:
        """Read once."""
        at = time.monotonic()
        try:
            self.samples.append(Sample(at, *self.read()))
        except OSError as exc:  # unanswered: a sample like any other, counted as bad
            self.samples.append(Sample(at, 0, str(exc)))

    def between(self, start: float, end: float | None) -> list[Sample]:
        """The samples taken from `start` to `end` (None: to now)."""
        return [s for s in self.samples if start <= s.at and (end is None or s.at <= end)]


def bad(samples: list[Sample]) -> list[Sample]:
    """Answers a client would not accept: not 200, or stale."""
    return [s for s in samples if not s.fresh]


def roles(apps: list[Flask]) -> list[str]:
    """Each app's role, sorted."""
    return sorted(get_service(app).role for app in apps)


def client_read(apps: list[Flask], symbol: str = "BTCUSDT") -> Callable[[], tuple[int, Any]]:
    """A reader that asks the apps in turn, as a load balancer would."""
    turn = [0]

    def read() -> tuple[int, Any]:
        turn[0] += 1
        answer = apps[turn[0] % len(apps)].test_client().get(f"/price/{symbol}")
        return answer.status_code, answer.get_json()

    return read


def test_a_short_redis_outage_starves_no_app_and_one_connection_comes_back(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
) -> None:
    with PrivateRedis() as server:
        settings = {"REDIS_URL": server.url, "PRICE_STALE_SECONDS": 1.5, "WS_LEADER_LOCK_TTL_SECONDS": 1.0}
        apps = [make_app(connect=False, **settings) for _ in range(2)]
        wait_until(lambda: roles(apps) == ["follower", "leader"], 5.0, "a leader and a follower")
        fake.set_rate(20)
        sampler = Sampler(client_read(apps))
        with sampler.running():
            wait_until(lambda: len(sampler.samples) > 10 and not bad(sampler.samples[-4:]), 5.0, "fresh prices")
            server.stop()
            down = time.monotonic()
            wait_until(lambda: roles(apps) == ["solo", "solo"], 3.0, "both apps ingesting on their own")
            wait_until(lambda: fake.open_connections() == 2, 3.0, "a connection per app")
            time.sleep(max(0.0, down + 2.0 - time.monotonic()))  # longer than the stale threshold
            server.start()
            up = time.monotonic()
            wait_until(lambda: fake.open_connections() == 1, 10.0, "one upstream connection again")
            wait_until(lambda: roles(apps) == ["follower", "leader"], 5.0, "a leader and a follower again")
            time.sleep(1.0)
        assert fake.open_connections() == 1
    assert bad(sampler.between(down, up + 1)) == []
    assert len(sampler.between(down, up)) >= 20


class FreezingProxy:
    """A TCP proxy in front of Redis; `freeze()` holds every byte (a silent partition of the
    clients behind it), `thaw()` delivers what it held and goes on."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.held: list[bytes] = []  # what was sent while frozen, in either direction
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self.flowing.clear()

    def thaw(self) -> None:
        """Forward again, held bytes first."""
        self.flowing.set()

    def close(self) -> None:
        """Stop accepting (open connections end with their peers)."""
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.flowing.is_set():
                    self.held.append(data)
                    self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass  # the other side went away: this direction ends too
        finally:
            source.close()
            sink.close()


@dataclass
class ChannelLog:
    """Every message published on the price channel: (monotonic time, origin)."""

    url: str
    channel: str
    messages: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> ChannelLog:
        self._pubsub = redis.Redis.from_url(self.url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self.channel)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None:
                self.messages.append((time.monotonic(), json.loads(message["data"])["origin"]))

    def first_from(self, origin: str) -> float | None:
        """When `origin` first published, None if never."""
        return next((at for at, o in self.messages if o == origin), None)


def test_a_leader_cut_off_from_redis_never_publishes_after_another_took_over(
    fake: FakeExchange,
    redis_app: Callable[..., Flask],
    redis_url: str,
    prefix: str,
) -> None:
    parts = urlsplit(redis_url)
    proxy = FreezingProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    ttl = {"WS_LEADER_LOCK_TTL_SECONDS": 1.0, "PRICE_STALE_SECONDS": 3.0}
    cut_off = redis_app(REDIS_URL=f"redis://127.0.0.1:{proxy.port}{parts.path}", **ttl)
    wait_until(lambda: get_service(cut_off).role == "leader", 3.0, "the first leader")
    other = redis_app(**ttl)
    wait_until(lambda: get_service(other).role == "follower", 3.0, "a follower")
    fake.set_rate(20)
    old, new = get_service(cut_off), get_service(other)
    try:
        with ChannelLog(redis_url, f"{prefix}price-updates") as channel:
            wait_until(lambda: channel.first_from(old.bridge.id), 3.0, "the leader publishing")  # type: ignore[union-attr]
            proxy.freeze()
            publishing = f"{prefix}price-updates".encode()
            wait_until(lambda: any(publishing in data for data in proxy.held), 5.0, "a publish held")
            wait_until(lambda: new.role == "leader", 5.0, "the follower taking over")
            assert old.role == "solo"  # it lost its lease: ingests on, publishes nothing
            wait_until(lambda: channel.first_from(new.bridge.id), 3.0, "the new leader publishing")  # type: ignore[union-attr]
            proxy.thaw()  # the publish the old leader sent while cut off reaches Redis now
            wait_until(lambda: old.role == "follower", 5.0, "the old leader following")
            wait_until(lambda: fake.open_connections() == 1, 5.0, "one upstream connection")
            time.sleep(0.5)
        took_over = channel.first_from(new.bridge.id)  # type: ignore[union-attr]
        assert took_over is not None
        late = [at - took_over for at, origin in channel.messages if origin == old.bridge.id and at > took_over]  # type: ignore[union-attr]
        assert late == []
    finally:
        proxy.close()


# ---- the measurements: two gunicorn workers, the real gunicorn.conf.py ----------------
@contextmanager
def two_workers(tmp_path: Path) -> Iterator[tuple[FakeExchange, PrivateRedis, Running]]:
    """The fake exchange, a private Redis, and the service with two workers in Redis mode,
    `PRICE_STALE_SECONDS=3`, delivering prices through the leader's feed."""
    with FakeExchange(rate=10) as fake, PrivateRedis() as server, Launcher(tmp_path) as launch:
        service = launch.gunicorn(
            "websocket-streaming",
            workers=2,
            REDIS_URL=server.url,
            PRICE_STALE_SECONDS="3",
            BINANCE_WS_URL=fake.ws_url,
            BINANCE_REST_URL=fake.rest_url,
            RATE_LIMIT_PRICE="1000000",
            LOG_LEVEL="INFO",
        )
        wait_until(lambda: fake.open_connections() == FEED, 20.0, "the leader's feed")
        wait_until(lambda: http("GET", f"{service.url}/price/BTCUSDT")[0] == 200, 20.0, "a price")
        yield fake, server, service


def samplers(service: Running) -> tuple[Sampler, Sampler]:
    """/price/BTCUSDT 20 times a second, /stats 5 times a second."""
    return (
        Sampler(lambda: http("GET", f"{service.url}/price/BTCUSDT")),
        Sampler(lambda: http("GET", f"{service.url}/stats"), rate=5),
    )


def measure_outage(tmp_path: Path, outage: float) -> dict[str, Any]:
    """Redis stopped for `outage` s under two workers while /price is read 20 times a second."""
    with two_workers(tmp_path) as (fake, server, service):
        prices, stats = samplers(service)
        with prices.running(), stats.running():
            time.sleep(2.0)
            server.stop()
            down = time.monotonic()
            connections = count_connections(fake, outage)
            up = time.monotonic()  # Redis returns: counted from its start, not from its first PING
            server.start()
            after = count_connections(fake, 10.0, until=FEED, stats=stats)
            feed_again = after[-1][0] - up if after[-1][1] == FEED else None
            settled = time.monotonic() + 1.0
            after += count_connections(fake, 3.0)
            # /stats lands on whichever worker accepts first: sample on until both answered
            wait_until(lambda: len(answered(stats.between(settled, None))) == 2, 15.0, "/stats of both workers")
        log = service.log_tail(60)
    during = prices.between(down, up)
    return {
        "outage_seconds": round(up - down, 1),
        "price_reads_during_outage": len(during),
        "stale_or_failed_during_outage": len(bad(during)),
        "stale_or_failed_overall": len(bad(prices.samples)),
        "workers_solo_during_outage": len(pids(stats.between(down + 1, up), "solo")),
        # once both workers went solo (1 s in): one connection each
        "max_upstream_connections_while_solo": max(n for at, n in connections if at > down + 1.0),
        "seconds_until_the_leaders_feed_alone": None if feed_again is None else round(feed_again, 2),
        "upstream_connections_at_end": after[-1][1],
        "roles_at_end": sorted({s.body["role"] for s in stats.between(settled, time.monotonic())}),
        "log": log,
    }


def answered(samples: list[Sample]) -> set[int]:
    """The worker processes that answered /stats."""
    return {s.body["pid"] for s in samples if s.status == 200}


def pids(samples: list[Sample], role: str) -> set[int]:
    """The worker processes that answered /stats with `role`."""
    return {s.body["pid"] for s in samples if s.status == 200 and s.body["role"] == role}


def count_connections(
    fake: FakeExchange, seconds: float, until: int | None = None, stats: Sampler | None = None
) -> list[tuple[float, int]]:
    """(time, the fake's open connections) every 100 ms for `seconds`, or until `until` are
    open and the latest /stats answers of both workers show one leader and one follower."""
    seen: list[tuple[float, int]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append((time.monotonic(), fake.open_connections()))
        if until is not None and seen[-1][1] == until and (stats is None or settled_roles(stats)):
            break
        time.sleep(0.1)
    return seen


def settled_roles(stats: Sampler) -> bool:
    """The last /stats answer of each worker: one leader, one follower holding nothing."""
    latest: dict[int, dict[str, Any]] = {}
    for sample in stats.samples[-20:]:
        if sample.status == 200:
            latest[sample.body["pid"]] = sample.body
    roles = sorted((body["role"], body["upstream_connections"]) for body in latest.values())
    return len(roles) == 2 and roles[0] == ("follower", 0) and roles[1][0] == "leader"


def test_a_10s_redis_outage_under_gunicorn_leaves_no_worker_stale(tmp_path: Path) -> None:
    figures = measure_outage(tmp_path, outage=10.0)
    log = figures.pop("log")
    print(f"\nredis outage figures: {json.dumps(figures)}")
    assert figures["price_reads_during_outage"] >= 120, log  # 20/s for 10 s, on a loaded machine
    assert figures["stale_or_failed_during_outage"] == 0, (figures, log)
    assert figures["stale_or_failed_overall"] == 0, (figures, log)
    assert figures["workers_solo_during_outage"] == 2, (figures, log)
    assert figures["max_upstream_connections_while_solo"] <= 2, (figures, log)  # one per worker
    assert figures["seconds_until_the_leaders_feed_alone"] is not None, (figures, log)
    assert figures["seconds_until_the_leaders_feed_alone"] <= 10, (figures, log)
    assert figures["upstream_connections_at_end"] == FEED, (figures, log)
    assert figures["roles_at_end"] == ["follower", "leader"], (figures, log)


def test_a_paused_leader_worker_starves_nobody_and_never_publishes_after_resuming(tmp_path: Path) -> None:
    # SIGSTOP: the leader keeps the lock (10 s TTL) but neither renews nor publishes; past
    # the TTL the other worker leads; SIGCONT: what the old one had queued must not land.
    with two_workers(tmp_path) as (fake, server, service):
        prices, stats = samplers(service)
        with prices.running(), stats.running(), ChannelLog(server.url, "price-updates") as channel:
            leader = wait_until(lambda: pids(stats.samples[-10:], "leader"), 10.0, "the leader's pid").pop()
            os.kill(leader, signal.SIGSTOP)
            paused = time.monotonic()
            try:
                wait_until(
                    lambda: pids(stats.between(paused, time.monotonic()), "leader"), 20.0, "a new leader"
                )
                time.sleep(1.0)
            finally:
                os.kill(leader, signal.SIGCONT)
            resumed = time.monotonic()
            wait_until(lambda: fake.open_connections() == FEED, 10.0, "the leader's feed alone again")
            time.sleep(2.0)
        log = service.log_tail(60)
    during = prices.between(paused + 0.2, resumed)  # a read the paused worker had taken hangs
    assert len(during) >= 100, log
    assert bad(during) == [], log
    assert bad(prices.between(resumed, time.monotonic())) == [], log
    took_over = next(at for at, origin in channel.messages if at > paused and pid_of(origin) != leader)
    late = [at - took_over for at, origin in channel.messages if at > took_over and pid_of(origin) == leader]
    assert late == [], log


def pid_of(origin: str) -> int:
    """The process id in a publisher's instance id (`host:pid:random`)."""
    return int(origin.split(":")[-2])
