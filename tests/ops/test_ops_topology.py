"""Production topology on loopback: Debian's nginx (deploy/nginx) in front of two instances of
each service under gunicorn, sharing the real Redis and a scratch PostgreSQL database.

What a user of the balanced system would check: limits hold per client address through the
balancer, one Binance connection serves every instance, an instance can stop under load
without a failed idempotent request or a lost acknowledged write, and SSE passes nginx
without buffering delay. Run with `-s` to see the figures.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import statistics
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sardag_testing import scratch_postgres
from sardag_testing.processes import Launcher, Running
from sardag_testing.traffic import SlowClients
from websocket_streaming.settings import SETTINGS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.api,
    pytest.mark.database,
    pytest.mark.redis,
    pytest.mark.websocket,
]

SERVICES = ("database-service", "websocket-streaming")
LIMIT = 20  # RATE_LIMIT_SIGNALS_HISTORY and RATE_LIMIT_PRICE for this run
LIMITED_ROUTES = {"database-service": "/signals/history", "websocket-streaming": "/price/BTCUSDT"}
SYMBOLS = "BTCUSDT,ETHUSDT"
# The leader's Binance feed under the default settings: WS_CONNECTIONS connections (A and B)
# held by one process across both instances.
FEED = next(int(s.default) for s in SETTINGS if s.name == "WS_CONNECTIONS")
LOCK_TTL = 5.0  # WS_LEADER_LOCK_TTL_SECONDS: a killed leader is replaced within this
LOAD_SOURCE = "127.0.0.3"  # the load test's client address, apart from the limit test's


@dataclass
class Cluster:
    """Everything the tests talk to."""

    launcher: Launcher
    exchange: Any
    database_url: str
    lb_ports: dict[str, int]
    instances: dict[str, list[Running]]
    access_log: Path
    start_instance: Callable[[str, int], Running]

    def lb(self, service: str) -> int:
        """nginx's port for `service`."""
        return self.lb_ports[service]


# ---- HTTP with a chosen source address ----------------------------------------------------
def call(
    method: str,
    port: int,
    path: str,
    *,
    source: str = "127.0.0.1",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> tuple[int, Any]:
    """One request to 127.0.0.1:`port` from `source`; (status, JSON or text). OSError if unanswered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if data is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(raw or b"null")
        return response.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def access_entries(cluster: Cluster) -> list[dict[str, Any]]:
    """nginx's access log (JSON lines, deploy/nginx log_format sardag)."""
    if not cluster.access_log.exists():
        return []
    complete = cluster.access_log.read_text().split("\n")[:-1]  # nginx may be mid-way through a line
    return [json.loads(line) for line in complete if line.strip()]


def btc(answer: Any) -> dict[str, Any] | None:
    """The BTCUSDT entry of a /prices answer."""
    prices = answer.get("prices", []) if isinstance(answer, dict) else []
    return next((p for p in prices if p["symbol"] == "BTCUSDT"), None)


# ---- the cluster ---------------------------------------------------------------------------
def _service_env(redis_url: str, database_url: str, exchange: Any) -> dict[str, dict[str, str]]:
    """Each service's settings: shared Redis, nginx as the one trusted hop, low test limits."""
    common = {
        "REDIS_URL": redis_url,
        "TRUSTED_PROXIES": "1",
        "RATE_LIMIT_DEFAULT": "1000000",
        "RATE_LIMIT_SIGNALS_SAVE": "1000000",
        "RATE_LIMIT_SIGNALS_HISTORY": str(LIMIT),
        "RATE_LIMIT_PRICE": str(LIMIT),
    }
    streaming = {"SYMBOLS": SYMBOLS, "WS_LEADER_LOCK_TTL_SECONDS": str(LOCK_TTL)}
    streaming |= {"BINANCE_WS_URL": exchange.ws_url, "BINANCE_REST_URL": exchange.rest_url}
    return {
        "database-service": {**common, "DATABASE_URL": database_url},
        "websocket-streaming": {**common, **streaming},
    }


def _start_nginx(
    ops: SimpleNamespace, launcher: Launcher, root: Path, instances: dict[str, list[Running]]
) -> dict[str, int]:
    """deploy/nginx rendered with loopback upstreams, started; its port per service."""
    ports = {service: ops.free_port() for service in SERVICES}
    values: dict[str, str | list[str]] = {
        "SARDAG_ACCESS_LOG": str(root / "access.log"),
        "SARDAG_TRACE_SAMPLE_PERCENT": "10",
    }
    for service in SERVICES:
        name = service.upper().replace("-", "_")
        values[f"SARDAG_{name}_LISTEN"] = f"127.0.0.1:{ports[service]}"
        values[f"SARDAG_{name}_UPSTREAM"] = [f"127.0.0.1:{r.port}" for r in instances[service]]
    proxy = launcher.start("nginx", ops.nginx_argv(ops.render_nginx(root, values)), ops.base_env(root))
    for port in ports.values():
        url = f"http://127.0.0.1:{port}/health"
        ops.wait_until(lambda url=url: proxy.process.poll() is not None or ops.answers(url), 20, "nginx")
    assert proxy.process.poll() is None, (root / "error.log").read_text()
    return ports


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str, ops: SimpleNamespace
) -> Iterator[Cluster]:
    ops.require_service_code()
    ops.find_tool("nginx", Path("/usr/sbin/nginx"))  # skip (fail under CI) before starting anything
    import redis
    from fake_exchange.server import FakeExchange

    redis.Redis.from_url(redis_url).flushdb()
    tmp = tmp_path_factory.mktemp("topology")
    exchange = FakeExchange("127.0.0.1", 0, rate=10.0).start()
    try:
        with scratch_postgres(postgres_url, "topology") as database_url, Launcher(tmp) as launcher:
            env = _service_env(redis_url, database_url, exchange)

            def start_instance(service: str, port: int) -> Running:
                return launcher.gunicorn(service, workers=2, wait=False, port=port, **env[service])

            instances = {s: [start_instance(s, ops.free_port()) for _ in range(2)] for s in SERVICES}
            for running in (r for group in instances.values() for r in group):
                launcher.wait_healthy(running, timeout=90)
            lb_ports = _start_nginx(ops, launcher, tmp / "nginx", instances)
            for running in instances["websocket-streaming"]:
                ops.wait_until(
                    lambda r=running: btc(call("GET", r.port, "/prices")[1]), 30, f"a price on {running.name}"
                )
            access_log = tmp / "nginx/access.log"
            yield Cluster(launcher, exchange, database_url, lb_ports, instances, access_log, start_instance)
    finally:  # Launcher stops every process it started when the `with` ends
        exchange.stop()


# ---- 1. limits through the balancer ----------------------------------------------------------
def burst(port: int, path: str, source: str, count: int) -> list[int]:
    """`count` concurrent GETs from `source`; their statuses."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: call("GET", port, path, source=source)[0], range(count)))


@pytest.mark.parametrize("service", SERVICES)
def test_a_limit_of_n_admits_exactly_n_per_client_address(cluster: Cluster, service: str) -> None:
    port, path = cluster.lb(service), LIMITED_ROUTES[service]
    admitted = {}
    for source in ("127.0.0.1", "127.0.0.2"):
        statuses = burst(port, path, source, LIMIT + 5)
        admitted[source] = statuses.count(200)
        assert statuses.count(200) == LIMIT, (source, statuses)
        assert statuses.count(429) == 5, (source, statuses)
    # The client cannot pick its key: nginx replaces the X-Forwarded-For it sends.
    status, _ = call("GET", port, path, source="127.0.0.2", headers={"X-Forwarded-For": "198.51.100.7"})
    assert status == 429
    served = {e["upstream"] for e in access_entries(cluster) if e["uri"] == path and e["status"] == 200}
    expected = {f"127.0.0.1:{r.port}" for r in cluster.instances[service]}
    assert served == expected, "the admitted requests did not spread over both instances"
    print(
        f"\n{service} {path} limit {LIMIT}/min through nginx: admitted {admitted}, served by {sorted(served)}"
    )


# ---- 2. one upstream connection, one book ----------------------------------------------------
def test_one_exchange_connection_and_the_same_fresh_price_everywhere(
    cluster: Cluster, ops: SimpleNamespace
) -> None:
    # The leader opens its A/B pair one after the other: count once the pair is up.
    ops.wait_until(lambda: cluster.exchange.open_connections() == FEED or None, 15, "the leader's feed to open")
    samples = []
    for _ in range(30):
        samples.append(cluster.exchange.open_connections())
        time.sleep(0.1)
    assert set(samples) == {FEED}, f"open connections on the fake exchange over 3 s: {samples}"
    ports = [r.port for r in cluster.instances["websocket-streaming"]] + [cluster.lb("websocket-streaming")]

    def same_fresh_price() -> list[dict[str, Any]] | None:
        answers = [btc(call("GET", port, "/prices")[1]) for port in ports]
        fresh = all(a is not None and not a["stale"] and a["age_seconds"] < 2 for a in answers)
        same = len({(a["price"], a["event_time"]) for a in answers if a is not None}) == 1
        return answers if fresh and same else None

    answers = ops.wait_until(same_fresh_price, 15, "both instances and nginx to serve the same fresh price")
    instances = cluster.instances["websocket-streaming"]
    leaders = ops.wait_until(lambda: _leaders(instances), 10, "one instance to report sardag_ws_leader 1")
    print(
        f"\nexchange connections (30 samples over 3 s): {sorted(set(samples))}; "
        f"sardag_ws_leader per instance: {leaders}; BTCUSDT on both instances and nginx: {answers[0]}"
    )


def _leaders(instances: list[Running]) -> list[float] | None:
    """sardag_ws_leader of each instance (its workers' maximum), when exactly one leads."""
    values = []
    for running in instances:
        text = call("GET", running.port, "/metrics")[1]
        found = re.search(r"^sardag_ws_leader\{[^}]*\} (\S+)$", text, re.MULTILINE)
        values.append(float(found[1]) if found else 0.0)
    return values if sorted(values) == [0.0, 1.0] else None


# ---- 3. SSE through nginx ----------------------------------------------------------------------
# Restated by each worker when it writes the event (ages, on its own clock): not its identity.
PER_WORKER_FIELDS = ("age_seconds", "quote_age_seconds", "stale", "received_at")


def event_key(data: bytes) -> str:
    """An SSE event's identity: its record's fields, without those each worker restates."""
    record = json.loads(data)
    for name in PER_WORKER_FIELDS:
        record.pop(name, None)
    return json.dumps(record, sort_keys=True)


@dataclass
class Subscriber:
    """Reads /stream on one port; keeps the time each event reached the socket, by its content.

    The times are the kernel's receive timestamps (SO_TIMESTAMPNS), read in small pieces so
    each names the packet that ended its event: on a loaded machine the reading thread may
    wake late, but what is compared is when nginx and gunicorn delivered, not when Python ran.
    """

    port: int
    arrivals: dict[str, float] = field(default_factory=dict)

    def run(self, until: float) -> None:
        """Read events until the monotonic time `until`."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            request = f"GET /stream?symbols={SYMBOLS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            sock.sendall(request.encode())
            buffer = b""
            while time.monotonic() < until:
                try:
                    chunk, received = _receive(sock)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if line.startswith(b"data: "):
                        self.arrivals.setdefault(event_key(line[6:]), received)


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux
TIMESPEC = struct.Struct("@ll")


def _receive(sock: socket.socket) -> tuple[bytes, float]:
    """Up to 256 bytes and the kernel's receive time of the packet they end in (Unix seconds)."""
    chunk, ancillary, _, _ = sock.recvmsg(256, socket.CMSG_SPACE(TIMESPEC.size))
    stamps = [data for level, kind, data in ancillary if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)]
    if not chunk:
        return chunk, 0.0
    assert stamps, "the kernel gave no receive timestamp"
    seconds, nanoseconds = TIMESPEC.unpack(stamps[0][: TIMESPEC.size])
    return chunk, seconds + nanoseconds / 1e9


def test_sse_through_nginx_adds_no_buffering_delay(cluster: Cluster) -> None:
    direct = {r.port: Subscriber(r.port) for r in cluster.instances["websocket-streaming"]}
    balanced = Subscriber(cluster.lb("websocket-streaming"))
    until = time.monotonic() + 10.0
    threads = [threading.Thread(target=s.run, args=(until,)) for s in (*direct.values(), balanced)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    time.sleep(0.5)  # nginx logs the stream once the client has gone
    streams = [e for e in access_entries(cluster) if e["uri"].startswith("/stream")]
    assert streams, "nginx logged no /stream request"
    port = int(streams[-1]["upstream"].rsplit(":", 1)[1])
    same_instance = direct[port]
    shared = [key for key in balanced.arrivals if key in same_instance.arrivals]
    assert len(shared) >= 100, f"only {len(shared)} events reached both subscribers"
    delays = sorted(balanced.arrivals[k] - same_instance.arrivals[k] for k in shared)
    p50, p99 = statistics.median(delays), delays[int(0.99 * (len(delays) - 1))]
    print(
        f"\nSSE via nginx vs a direct subscriber of instance :{port}, {len(delays)} events: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms"
    )
    assert p99 <= 0.050, f"p99 {p99 * 1000:.1f} ms behind the direct subscriber"


# ---- 4. slow clients wait on nginx -----------------------------------------------------------
SLOW_PATHS = {"database-service": ["/health"], "websocket-streaming": ["/health", "/price/BTCUSDT"]}


@pytest.mark.parametrize("service", SERVICES)
def test_slow_clients_are_held_and_cut_by_nginx_not_the_workers(cluster: Cluster, service: str) -> None:
    """200 heads sent one byte a second (tests/reliability/test_slow_clients.py, through nginx).

    Directly, database-service's 8 threads each wait on a slow head and it answers nothing;
    nginx reads every head itself, answers /health and /price within 1 s throughout, and
    closes the slow connections at client_header_timeout (10 s).
    """
    port = cluster.lb(service)
    probes: list[tuple[int, float]] = []
    opened = time.monotonic()
    with SlowClients(f"http://127.0.0.1:{port}", 200) as slow:
        started = time.monotonic()
        while time.monotonic() - started < 8.0:  # under nginx's 10 s: every slow client is in place
            for path in SLOW_PATHS[service]:
                source = f"127.0.4.{len(probes) % 250 + 1}"  # /price is limited per client address
                sent = time.monotonic()
                probes.append((call("GET", port, path, source=source, timeout=5)[0], time.monotonic() - sent))
            time.sleep(0.25)
        held = len(slow.sockets)
        first = _closed_by_peer(slow.sockets[0])  # blocks until nginx gives up on it
        first_cut = time.monotonic() - opened
        closed = [first] + [_closed_by_peer(sock) for sock in slow.sockets[1:]]
        held_for = time.monotonic() - opened
    worst = max(elapsed for _, elapsed in probes)
    print(
        f"\n200 slow clients on nginx's {service} port: {held} held while {len(probes)} probes of "
        f"{SLOW_PATHS[service]} got {sorted({status for status, _ in probes})}, worst {worst * 1000:.0f} ms; "
        f"nginx cut them after {held_for:.1f} s"
    )
    assert held == 200
    assert [status for status, _ in probes] == [200] * len(probes)
    assert worst <= 1.0
    assert all(closed)
    # client_header_timeout is 10 s, counted from each connection's accept (all within `opened` .. `started`)
    assert first_cut >= 9.5, f"nginx cut a slow client after {first_cut:.1f} s"
    assert held_for <= 15.0, f"nginx closed the last slow client after {held_for:.1f} s"


def _closed_by_peer(sock: socket.socket) -> bool:
    """Wait for the peer to close (FIN, or RST: nginx resets timed-out connections)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# ---- 5. an instance of each service stops under load ---------------------------------------
@dataclass
class Tally:
    """Outcomes of the load, by phase."""

    phase: str = "both up"
    reads: dict[str, list[int]] = field(default_factory=dict)
    writes: dict[str, list[int]] = field(default_factory=dict)  # first attempts
    acknowledged: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int) -> None:
        """Count one answer (0: no answer at all) in the current phase."""
        with self.lock:
            getattr(self, kind).setdefault(self.phase, []).append(status)


def _reader(cluster: Cluster, tally: Tally, stop: threading.Event, signal_id: int) -> None:
    paths = [
        ("database-service", f"/signals/{signal_id}"),
        ("database-service", "/performance/stats"),
        ("websocket-streaming", "/prices"),
        ("websocket-streaming", "/symbols"),
    ]
    index = 0
    while not stop.is_set():
        service, path = paths[index % len(paths)]
        index += 1
        try:
            status = call("GET", cluster.lb(service), path, source=LOAD_SOURCE)[0]
        except OSError:
            status = 0
        tally.add("reads", status)


def _save(cluster: Cluster, body: dict[str, Any]) -> int:
    try:
        return call("POST", cluster.lb("database-service"), "/signals/save", source=LOAD_SOURCE, body=body)[0]
    except OSError:
        return 0


def _writer(cluster: Cluster, tally: Tally, stop: threading.Event) -> None:
    """Save signals with a client_id, retrying an unanswered or 5xx save as a client should."""
    while not stop.is_set():
        client_id = uuid.uuid4().hex
        body = {"symbol": "BTCUSDT", "action": "BUY", "price": 50000, "client_id": client_id}
        status = _save(cluster, body)
        tally.add("writes", status)
        for _ in range(5):
            if status in (200, 201) or 400 <= status < 500:
                break
            time.sleep(0.2)
            status = _save(cluster, body)
        with tally.lock:
            (tally.acknowledged if status in (200, 201) else tally.given_up).append(client_id)


def _stored(database_url: str, client_ids: list[str]) -> dict[str, int]:
    """How many rows each of `client_ids` has in the signals table."""
    import psycopg2

    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_id, count(*) FROM signals WHERE client_id = ANY(%s) GROUP BY client_id",
            (client_ids,),
        )
        return dict(cur.fetchall())


def _served_since(cluster: Cluster, port: int, since: int) -> bool:
    return any(
        e["upstream"] == f"127.0.0.1:{port}" and e["status"] < 500 for e in access_entries(cluster)[since:]
    )


def _kill(running: Running) -> None:
    """SIGKILL the instance's whole process group: a crash, not a shutdown."""
    os.killpg(running.process.pid, signal.SIGKILL)
    running.process.wait(10)


def test_stopping_an_instance_of_each_service_under_load(cluster: Cluster, ops: SimpleNamespace) -> None:
    status, saved = call(
        "POST",
        cluster.lb("database-service"),
        "/signals/save",
        source=LOAD_SOURCE,
        body={"symbol": "ETHUSDT", "action": "SELL", "price": 3000},
    )
    assert status == 201, saved
    tally, stop = Tally(), threading.Event()
    workers = [threading.Thread(target=_reader, args=(cluster, tally, stop, saved["id"])) for _ in range(4)]
    workers += [threading.Thread(target=_writer, args=(cluster, tally, stop)) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2)
        first = {s: cluster.instances[s][0] for s in SERVICES}
        tally.phase = "SIGTERM one of each"
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda r: r.stop(timeout=40), first.values()))
        time.sleep(3)
        tally.phase = "restart it"
        marker = len(access_entries(cluster))
        for service, old in first.items():
            cluster.instances[service][0] = cluster.start_instance(service, old.port)
        for service in SERVICES:
            cluster.launcher.wait_healthy(cluster.instances[service][0], timeout=90)
            port = cluster.instances[service][0].port
            ops.wait_until(lambda p=port: _served_since(cluster, p, marker), 30, f"nginx to use :{port} again")
        tally.phase = "SIGKILL the other"
        for service in SERVICES:
            _kill(cluster.instances[service][1])
        time.sleep(LOCK_TTL + 3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    _report(tally)
    for phase, statuses in tally.reads.items():
        failed = [s for s in statuses if not 200 <= s < 300]
        assert not failed, (
            f"{phase}: {len(failed)} of {len(statuses)} idempotent requests failed: {failed[:10]}"
        )
    stored = _stored(cluster.database_url, tally.acknowledged)
    lost = set(tally.acknowledged) - set(stored)
    assert not lost, f"{len(lost)} acknowledged writes are not in the database"
    assert {cid: n for cid, n in stored.items() if n != 1} == {}, "a retried write was stored twice"
    assert not tally.given_up, f"{len(tally.given_up)} writes never succeeded in 5 retries"
    ops.wait_until(
        lambda: cluster.exchange.open_connections() == FEED, 2 * LOCK_TTL + 10, "the leader's feed alone again"
    )


def _report(tally: Tally) -> None:
    print(f"\nload through nginx from {LOAD_SOURCE} (4 readers, 2 writers):")
    for phase in tally.reads:
        reads, writes = tally.reads.get(phase, []), tally.writes.get(phase, [])
        failed_reads = sum(1 for s in reads if not 200 <= s < 300)
        acked = sum(1 for s in writes if s in (200, 201))
        print(
            f"  {phase:20} reads {len(reads):5} failed {failed_reads}; "
            f"writes {len(writes):4} acknowledged at once {acked}, failed first time {len(writes) - acked} "
            f"{sorted(set(writes) - {200, 201})}"
        )
    print(
        f"  acknowledged writes (after client retries with the same client_id): {len(tally.acknowledged)}, "
        f"each stored exactly once; given up: {len(tally.given_up)}"
    )
