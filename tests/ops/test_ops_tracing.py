"""Tracing with real parts: Debian's nginx (deploy/nginx) in front of database-service under
gunicorn, the suite's PostgreSQL and Redis, and a small OTLP/HTTP receiver decoding the
exporter's real protobuf (tests/support/sardag_testing/otlp.py).

What an operator following a request would check: the client's trace id reaches the Flask
span, the PostgreSQL span is its child and PostgreSQL itself sees the trace in the
statement's comment; the log line carries the ids; nginx starts a trace when the client sent
none; malformed trace headers start a new trace and never a 4xx or 5xx; an unreachable
collector costs no request; tracing off loads nothing.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from sardag_testing import scratch_postgres
from sardag_testing.processes import REPO, Launcher, Running, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]

API_KEY = "tracing-test-key"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
# Malformed W3C headers, each to be replaced by a new trace (never refused, never logged).
BAD_TRACEPARENTS = {
    "too short": f"00-{CLIENT_TRACE[:30]}-{CLIENT_PARENT}-01",
    "too long": f"00-{CLIENT_TRACE}0-{CLIENT_PARENT}-01",
    "bad hex": f"00-{CLIENT_TRACE[:31]}g-{CLIENT_PARENT}-01",
    "upper case": f"00-{CLIENT_TRACE.upper()}-{CLIENT_PARENT.upper()}-01",
    "zero trace id": f"00-{'0' * 32}-{CLIENT_PARENT}-01",
    "zero parent id": f"00-{CLIENT_TRACE}-{'0' * 16}-01",
    "version ff": f"ff-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
    "quotes and braces": f'00-{CLIENT_TRACE}-{CLIENT_PARENT}-01","evil":{{"x":"\\u0000',
    "10 KB": "00-" + "a" * 10_240,
}


@dataclass
class Traced:
    """database-service with tracing on, behind nginx, exporting to `receiver`."""

    receiver: object
    service: Running
    nginx: Running
    nginx_port: int
    access_log: Path
    database_url: str


def call(
    port: int, path: str, headers: dict[str, str] | None = None, body: object = None
) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body) whatever the status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json", **(headers or {})},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def access_line(service: Running, request_id: str) -> dict[str, object]:
    """The service's JSON access-log line of one request (waits for the batched writer)."""
    deadline = time.monotonic() + 10
    while True:
        for line in service.log_text().splitlines():
            if request_id in line and '"request"' in line:
                found: dict[str, object] = json.loads(line)
                if found.get("request_id") == request_id:
                    return found
        assert time.monotonic() < deadline, f"no access line for {request_id}:\n{service.log_tail()}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str, ops: SimpleNamespace
) -> Iterator[Traced]:
    ops.require_service_code()
    ops.find_tool("nginx", Path("/usr/sbin/nginx"))
    from sardag_testing.otlp import otlp_receiver

    tmp = tmp_path_factory.mktemp("tracing")
    with (
        otlp_receiver() as receiver,
        scratch_postgres(postgres_url, "tracing") as database_url,
        Launcher(tmp) as launcher,
    ):
        service = launcher.gunicorn(
            "database-service",
            workers=2,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            API_KEY=API_KEY,
            TRUSTED_PROXIES="1",
            LOG_LEVEL="INFO",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",  # the SDK's own variable: export every 0.1 s
        )
        port = ops.free_port()
        values: dict[str, str | list[str]] = {
            "SARDAG_ACCESS_LOG": str(tmp / "nginx" / "access.log"),
            "SARDAG_TRACE_SAMPLE_PERCENT": "100",
            "SARDAG_DATABASE_SERVICE_LISTEN": f"127.0.0.1:{port}",
            "SARDAG_DATABASE_SERVICE_UPSTREAM": [f"127.0.0.1:{service.port}"],
            "SARDAG_WEBSOCKET_STREAMING_LISTEN": f"127.0.0.1:{ops.free_port()}",
            "SARDAG_WEBSOCKET_STREAMING_UPSTREAM": [f"127.0.0.1:{ops.free_port()}"],
        }
        conf = ops.render_nginx(tmp / "nginx", values)
        nginx = launcher.start("nginx", ops.nginx_argv(conf), ops.base_env(tmp))
        url = f"http://127.0.0.1:{port}/health"
        ops.wait_until(lambda: nginx.process.poll() is not None or ops.answers(url), 20, "nginx")
        assert nginx.process.poll() is None, (tmp / "nginx" / "error.log").read_text()
        yield Traced(receiver, service, nginx, port, tmp / "nginx" / "access.log", database_url)


def server_span(traced: Traced, trace_id: str, path: str) -> object:
    """The Flask span of `path` in trace `trace_id` (waits for the export)."""
    receiver = traced.receiver
    spans = receiver.wait_for(  # type: ignore[attr-defined]
        lambda spans: any(s.trace_id == trace_id and s.kind == "server" for s in spans)
    )
    (span,) = [s for s in spans if s.trace_id == trace_id and s.kind == "server"]
    assert span.attributes["http.route"] == path.split("?")[0]
    return span


@pytest.mark.database
@pytest.mark.redis
def test_a_client_traceparent_through_nginx_gives_one_trace_down_to_postgresql(traced: Traced) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    status, headers, _ = call(traced.nginx_port, "/signals/history", {"traceparent": traceparent})
    assert status == 200
    # PostgreSQL saw the trace: the pooled connection's last statement carries it as a comment.
    import psycopg2

    with psycopg2.connect(traced.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        statements = [row[0] for row in cur.fetchall()]
    conn.close()
    flask = server_span(traced, CLIENT_TRACE, "/signals/history")
    assert flask.parent_span_id == CLIENT_PARENT  # the client's span is its parent
    spans = traced.receiver.wait_for(  # type: ignore[attr-defined]
        lambda spans: any(
            s.trace_id == CLIENT_TRACE and s.attributes.get("db.system") == "postgresql" for s in spans
        )
    )
    trace = [s for s in spans if s.trace_id == CLIENT_TRACE]
    postgresql = [s for s in trace if s.attributes.get("db.system") == "postgresql"]
    # every statement is the request's child (a worker's first connection sets its session up
    # inside the request that opened it), and exactly one is the history query
    assert {(s.parent_span_id, s.kind) for s in postgresql} == {(flask.span_id, "client")}
    (sql,) = [s for s in postgresql if "FROM signals" in str(s.attributes["db.statement"])]
    # the rate limiter's Redis call is inside the request's span too
    assert any(s.attributes.get("db.system") == "redis" and s.parent_span_id == flask.span_id for s in trace)
    commented = [q for q in statements if f"traceparent='00-{CLIENT_TRACE}-{sql.span_id}-01'" in q]
    assert commented, statements
    assert "FROM signals" in commented[0]
    # the access line names the trace and the Flask span
    line = access_line(traced.service, headers["X-Request-ID"])
    assert (line["trace_id"], line["span_id"]) == (CLIENT_TRACE, flask.span_id)


@pytest.mark.database
def test_a_trace_the_client_did_not_sample_makes_no_spans_but_its_log_line_names_it(traced: Traced) -> None:
    trace_id = "9" * 32
    status, headers, _ = call(
        traced.nginx_port, "/signals/history", {"traceparent": f"00-{trace_id}-{CLIENT_PARENT}-00"}
    )
    assert status == 200
    assert access_line(traced.service, headers["X-Request-ID"])["trace_id"] == trace_id
    # a sampled request after it is exported; nothing of the unsampled one ever is
    server_span(traced, call_sampled(traced), "/signals/history")
    assert traced.receiver.trace(trace_id) == []  # type: ignore[attr-defined]


def call_sampled(traced: Traced) -> str:
    """Send one sampled request; its trace id."""
    trace_id = f"{time.time_ns():032x}"[-32:]
    status, _, _ = call(
        traced.nginx_port, "/signals/history", {"traceparent": f"00-{trace_id}-{CLIENT_PARENT}-01"}
    )
    assert status == 200
    return trace_id


@pytest.mark.database
def test_nginx_starts_the_trace_when_the_client_sent_none(traced: Traced) -> None:
    status, headers, _ = call(traced.nginx_port, "/signals/history")
    assert status == 200
    request_id = headers["X-Request-ID"]
    line = access_line(traced.service, request_id)
    trace_id = str(line["trace_id"])
    assert trace_id == request_id  # nginx's $request_id is the trace id it starts
    flask = server_span(traced, trace_id, "/signals/history")
    assert flask.parent_span_id == trace_id[:16]
    nginx_line = next(json.loads(x) for x in traced.access_log.read_text().splitlines() if request_id in x)
    assert nginx_line["traceparent"].startswith(f"00-{trace_id}-")


@pytest.mark.database
@pytest.mark.parametrize("via", ["nginx", "direct"])
@pytest.mark.parametrize("name", sorted(BAD_TRACEPARENTS))
def test_a_malformed_traceparent_starts_a_new_trace_and_is_never_logged(
    traced: Traced, via: str, name: str
) -> None:
    bad = BAD_TRACEPARENTS[name]
    port = traced.nginx_port if via == "nginx" else traced.service.port
    headers = {"traceparent": bad, "tracestate": "k=" + "v" * 10_000}
    status, answer, _ = call(port, "/signals/history", headers)
    assert status == 200
    line = access_line(traced.service, answer["X-Request-ID"])
    trace_id = str(line["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert trace_id not in bad
    assert trace_id != "0" * 32
    flask = server_span(traced, trace_id, "/signals/history")
    if via == "direct":
        assert flask.parent_span_id == ""  # a root: nothing of the bad header was continued
    logs = traced.service.log_text() + traced.access_log.read_text()
    assert bad not in logs
    assert "v" * 1000 not in logs


@pytest.mark.database
def test_copy_and_statistics_have_their_own_spans(traced: Traced) -> None:
    trace_id = "5" * 32
    batch = [{"symbol": "BTCUSDT", "action": "BUY", "price": 100 + i} for i in range(3)]
    headers = {"traceparent": f"00-{trace_id}-{CLIENT_PARENT}-01"}
    status, _, _ = call(traced.nginx_port, "/signals/save", headers, batch)
    assert status == 201
    flask = server_span(traced, trace_id, "/signals/save")
    spans = traced.receiver.wait_for(  # type: ignore[attr-defined]
        lambda spans: any(s.trace_id == trace_id and s.name == "COPY signals" for s in spans)
    )
    (copy,) = [s for s in spans if s.trace_id == trace_id and s.name == "COPY signals"]
    assert copy.parent_span_id == flask.span_id
    assert copy.attributes["db.operation.batch.size"] == 3

    stats_trace = "6" * 32
    headers = {"traceparent": f"00-{stats_trace}-{CLIENT_PARENT}-01"}
    uncached = f"/performance/stats?group_by=symbol&symbol=T{time.time_ns() % 10**9}USDT"  # a new cache key
    status, answer, _ = call(traced.nginx_port, uncached, headers)
    assert status == 200
    assert answer["X-Cache"] == "MISS"
    flask = server_span(traced, stats_trace, "/performance/stats")
    spans = traced.receiver.wait_for(  # type: ignore[attr-defined]
        lambda spans: any(s.trace_id == stats_trace and s.attributes.get("db.system") for s in spans)
    )
    (query,) = [s for s in spans if s.trace_id == stats_trace and s.name == "statistics query"]
    assert query.parent_span_id == flask.span_id
    assert any(
        s.parent_span_id == query.span_id and s.attributes.get("db.system") == "postgresql" for s in spans
    )


# ---- an unreachable collector ------------------------------------------------------------------
@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections and never answers (a collector hung or firewalled)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_an_unreachable_collector_fails_no_request_and_dropped_spans_are_counted(
    launcher: Launcher, black_hole: int
) -> None:
    service = launcher.gunicorn(
        "database-service",
        workers=1,
        API_KEY=API_KEY,
        LOG_LEVEL="INFO",  # access lines: the marker that every line before them is written
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{black_hole}",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_BSP_MAX_QUEUE_SIZE="8",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4",
    )
    statuses = [call(service.port, "/signals/history")[0] for _ in range(60)]
    assert statuses == [200] * 60

    def dropped() -> float:
        text = urllib.request.urlopen(f"{service.url}/metrics", timeout=10).read().decode()
        found = re.findall(
            r'^sardag_trace_spans_dropped_total\{[^}]*reason="queue_full"[^}]*\} (\S+)$', text, re.M
        )
        return sum(float(v) for v in found)

    assert dropped() >= 60 - 8 - 4  # all but what the queue and one batch in flight hold
    # lines reach stderr through a batching writer: once a later request's access line is
    # written, every line before it is too
    status, headers, _ = call(service.port, "/signals/history")
    assert status == 200
    access_line(service, headers["X-Request-ID"])
    warnings = [m for m in service.log_messages() if "queue full" in m]
    assert len(warnings) == 1, warnings  # said once, not once per span


def test_a_refusing_collector_is_said_once_and_its_lost_batches_counted(
    launcher: Launcher, ops: SimpleNamespace
) -> None:
    closed = ops.free_port()  # nothing listens: each export is refused
    service = launcher.gunicorn(
        "database-service",
        workers=1,
        API_KEY=API_KEY,
        LOG_LEVEL="INFO",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    for _ in range(3):
        assert [call(service.port, "/signals/history")[0] for _ in range(5)] == [200] * 5
        time.sleep(1.5)

    def failed() -> float:
        text = urllib.request.urlopen(f"{service.url}/metrics", timeout=10).read().decode()
        pattern = r'^sardag_trace_spans_dropped_total\{[^}]*reason="export_failed"[^}]*\} (\S+)$'
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    ops.wait_until(lambda: failed() >= 15, 30, "the refused batches counted")
    messages = service.log_messages()
    assert len([m for m in messages if "trace export failing" in m]) == 1, messages
    assert not [m for m in messages if "Transient error" in m or "Failed to export" in m]


# ---- tracing off -------------------------------------------------------------------------------
OFF_PROBE = """
import json, sys, threading
from database_service import create_app
app = create_app({"DATABASE_URL": sys.argv[1], "API_KEY": "tracing-test-key-0123"})
client = app.test_client()
statuses = [client.get("/signals/history", headers={"X-API-Key": "tracing-test-key-0123",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}).status_code
            for _ in range(3)]
# redis-py 7 imports OpenTelemetry's API and metrics SDK when they are installed (its own
# metrics, off until initialised): what tracing adds is the tracing SDK, exporter, instrumentation.
ours = ("shared.tracing_sdk", "opentelemetry.sdk.trace", "opentelemetry.exporter",
        "opentelemetry.instrumentation")
trace = sys.modules.get("opentelemetry.trace")
print(json.dumps({"statuses": statuses,
                  "modules": sorted(m for m in sys.modules if m.startswith(ours)),
                  "provider": None if trace is None else repr(trace._TRACER_PROVIDER),
                  "threads": sorted(t.name for t in threading.enumerate())}))
"""


def test_tracing_off_imports_nothing_and_starts_no_exporter_thread(tmp_path: Path) -> None:
    env = service_env(tmp_path, LOG_LEVEL="WARNING")
    for name in [k for k in env if k.startswith("OTEL_")]:
        env.pop(name)
    result = subprocess.run(
        [sys.executable, "-c", OFF_PROBE, f"sqlite:///{tmp_path / 'off.db'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe["statuses"] == [200, 200, 200]
    assert probe["modules"] == []  # no tracing SDK, no exporter, no instrumentation
    assert probe["provider"] in (None, "None")  # no tracer provider set: no span can exist
    assert not [t for t in probe["threads"] if "otel" in t.lower()], probe["threads"]
    assert "trace_id" not in result.stderr


# ---- a price across processes ----------------------------------------------------------------
def role(running: Running) -> str | None:
    """The streaming instance's role as its /health says (leader, follower, solo)."""
    try:
        with urllib.request.urlopen(f"{running.url}/health", timeout=5) as answer:
            body = answer.read()
    except urllib.error.HTTPError as error:
        body = error.read()
    except OSError:
        return None
    found = re.search(rb'"role":\s*"(\w+)"', body)
    return found[1].decode() if found else None


def first_sse_price(running: Running, timeout: float = 20.0) -> str:
    """Open /stream on `running` and return the first price event it sends."""
    url = f"{running.url}/stream?symbols=BTCUSDT"
    with urllib.request.urlopen(url, timeout=timeout) as stream:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = stream.readline().decode()
            if line.startswith("event: price"):
                return line + stream.readline().decode()
    raise AssertionError(f"no price event from {running.name} within {timeout} s")


@pytest.mark.redis
@pytest.mark.websocket
def test_a_price_from_the_exchange_to_a_follower_sse_client_is_one_trace(
    launcher: Launcher, redis_url: str, ops: SimpleNamespace
) -> None:
    ops.require_service_code()
    from fake_exchange.server import FakeExchange
    from sardag_testing.otlp import otlp_receiver

    exchange = FakeExchange("127.0.0.1", 0, rate=5.0).start()
    try:
        with otlp_receiver() as receiver:
            env = {
                "REDIS_URL": redis_url,
                "REDIS_KEY_PREFIX": f"tracing-{ops.free_port()}:",
                "SYMBOLS": "BTCUSDT",
                "BINANCE_WS_URL": exchange.ws_url,
                "BINANCE_REST_URL": exchange.rest_url,
                "WS_LEADER_LOCK_TTL_SECONDS": "5",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
            leader = launcher.gunicorn("websocket-streaming", workers=1, **env)
            ops.wait_until(lambda: role(leader) == "leader", 30, "a leader")
            follower = launcher.gunicorn("websocket-streaming", workers=1, **env)
            ops.wait_until(lambda: role(follower) == "follower", 30, "a follower")
            assert "BTCUSDT" in first_sse_price(follower)

            def chains(spans: list) -> list[list]:  # type: ignore[type-arg]
                """Every SSE write -> receive -> publish -> frame chain, each step the next's child."""
                by_id = {s.span_id: s for s in spans}
                found = []
                for write in (s for s in spans if s.name == "sse write"):
                    chain, span = [write], write
                    while span.parent_span_id in by_id:
                        span = by_id[span.parent_span_id]
                        chain.append(span)
                    if [s.name for s in chain] == [
                        "sse write",
                        "price receive",
                        "price publish",
                        "binance frame",
                    ]:
                        found.append(chain)
                return found

            write, receive, publish, frame = chains(receiver.wait_for(lambda spans: bool(chains(spans))))[0]
            assert len({s.trace_id for s in (write, receive, publish, frame)}) == 1
            assert frame.parent_span_id == ""  # the trace starts at the exchange's frame
            instance = "resource.service.instance.id"
            assert frame.attributes[instance] == publish.attributes[instance]  # the leader
            assert receive.attributes[instance] == write.attributes[instance]  # the follower
            assert frame.attributes[instance] != write.attributes[instance]
            redis_calls = [s for s in receiver.trace(write.trace_id) if s.parent_span_id == publish.span_id]
            assert any(s.attributes.get("db.system") == "redis" for s in redis_calls)  # the publish script

            # the Binance line: its connect, then a reconnect with the reason, as span events
            exchange.drop()
            reconnected = receiver.wait_for(
                lambda spans: any(
                    e[0] == "reconnect" for s in spans if s.name == "binance connect" for e in s.events
                )
            )
            connects = [s for s in reconnected if s.name == "binance connect"]
            events = [e for s in connects for e in s.events]
            assert ("connect", {"reason": "start"}) in events
            assert any(name == "reconnect" and attrs["reason"] for name, attrs in events)
            assert {"opened", "delivering"} <= {name for name, _ in events}
            exchange.server_shutdown(close=False)  # Binance's notice: rotate (make before break)
            rotated = receiver.wait_for(
                lambda spans: any(name == "rotation" for s in spans for name, _ in s.events)
            )
            rotation = next(s for s in rotated if any(name == "rotation" for name, _ in s.events))
            assert ("rotation", {"reason": "serverShutdown"}) in rotation.events
            assert "switched" in {name for name, _ in rotation.events}
    finally:
        exchange.stop()


# ---- every launcher: set up in the worker, flushed at a graceful stop --------------------------
LAUNCHERS = {
    "gunicorn with the project's conf": ["gunicorn", "-c", "database-service/gunicorn.conf.py"],
    "plain gunicorn": ["gunicorn", "--workers", "2", "--threads", "2"],
    "flask run": ["flask", "run"],
}


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_each_launcher_traces_in_its_workers_and_flushes_at_a_graceful_stop(
    launcher: Launcher, tmp_path: Path, ops: SimpleNamespace, name: str
) -> None:
    from sardag_testing.otlp import otlp_receiver

    with otlp_receiver() as receiver:
        port = ops.free_port()
        argv = [*LAUNCHERS[name]]
        argv[0] = str(Path(sys.executable).parent / argv[0])
        if name == "flask run":
            argv[1:1] = ["--app", "database_service:create_app()"]
            argv += ["--port", str(port)]
        else:
            argv += ["--bind", f"127.0.0.1:{port}", "database_service:create_app()"]
        env = service_env(
            tmp_path,
            API_KEY=API_KEY,
            PORT=str(port),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="600000",  # nothing leaves before the stop
        )
        server = launcher.start(name.replace(" ", "-"), argv, env, port)
        launcher.wait_healthy(server)
        trace_id = "7" * 32
        status, _, _ = call(port, "/signals/history", {"traceparent": f"00-{trace_id}-{CLIENT_PARENT}-01"})
        assert status == 200
        time.sleep(0.5)
        assert receiver.trace(trace_id) == []  # still queued in the worker
        server.signal(signal.SIGINT if name == "flask run" else signal.SIGTERM)
        assert server.process.wait(30) == 0
        (span,) = [s for s in receiver.trace(trace_id) if s.kind == "server"]
        pid = int(str(span.attributes["resource.service.instance.id"]).rpartition(":")[2])
        if name != "flask run":
            assert pid != server.process.pid  # a worker's, made after its fork


SENTRY_PROBE = """
import json, sys
import sentry_sdk
from sentry_sdk.transport import Transport
from database_service import create_app
from shared.sentry_integration import init_sentry

class Recording(Transport):
    envelopes = []
    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

app = create_app(
    {"DATABASE_URL": sys.argv[1], "API_KEY": "tracing-test-key-012", "OTEL_EXPORTER_OTLP_ENDPOINT": sys.argv[2]}
)

@app.get("/boom")
def boom():
    raise RuntimeError("kaboom")

init_sentry("database-service", dsn="https://public@sentry.invalid/1", transport=Recording())
answer = app.test_client().get("/boom", headers={"traceparent": sys.argv[3]})
sentry_sdk.flush()
events = [i.payload.json for e in Recording.envelopes for i in e.items if i.type == "event"]
print(json.dumps({"status": answer.status_code, "events": events}))
"""


def test_a_sentry_event_carries_the_trace_id(tmp_path: Path) -> None:
    from sardag_testing.otlp import otlp_receiver

    trace_id = "8" * 32
    with otlp_receiver() as receiver:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                SENTRY_PROBE,
                f"sqlite:///{tmp_path / 'sentry.db'}",
                receiver.endpoint,
                f"00-{trace_id}-{CLIENT_PARENT}-01",
            ],
            cwd=REPO,
            env=service_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        probe = json.loads(result.stdout.splitlines()[-1])
        assert probe["status"] == 500
        (event,) = probe["events"]
        assert "kaboom" in json.dumps(event)
        assert event["tags"]["trace_id"] == trace_id
        (span,) = [s for s in receiver.wait_for(lambda spans: bool(spans)) if s.trace_id == trace_id]
        assert event["contexts"]["otel"] == {"trace_id": trace_id, "span_id": span.span_id}
