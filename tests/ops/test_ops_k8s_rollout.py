"""A Kubernetes rolling update, played with the services themselves: two websocket-streaming
instances under gunicorn behind the project's nginx (deploy/nginx), sharing Redis, replaced
one by one under REST and SSE load in the order the manifests give a pod's replacement.

The mapping (docs/kubernetes.md, "Graceful rollout"): `maxSurge: 1, maxUnavailable: 0`
-> the new instance starts and answers /readyz before an old one goes; the endpoint
removal -> nginx reloaded without the old instance; `preStop: sleep` -> the old instance
keeps serving for PRESTOP_SECONDS; SIGTERM -> gunicorn's graceful stop (SSE streams end at
once, REST in flight finishes); the SSE clients reconnect with Last-Event-ID, as an
EventSource does.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.api,
    pytest.mark.redis,
    pytest.mark.websocket,
]

PRESTOP_SECONDS = 2.0  # the manifests' 10 s, shortened: nginx applies a reload at once here
READERS = 4
SUBSCRIBERS = 4


@dataclass
class Tally:
    """What the clients saw."""

    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    reconnects: dict[int, int] = field(default_factory=dict)
    resumed_with_id: int = 0
    resumed_with_events: int = 0  # resumed streams that then delivered price events
    lock: threading.Lock = field(default_factory=threading.Lock)


def _reader(port: int, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/price/BTCUSDT")
            status = conn.getresponse().status
        except OSError as exc:
            with tally.lock:
                tally.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        finally:
            conn.close()
        with tally.lock:
            tally.statuses[status] = tally.statuses.get(status, 0) + 1


def _subscriber(index: int, port: int, tally: Tally, stop: threading.Event) -> None:
    """An EventSource: read /stream; when it ends, reconnect with the last id seen."""
    last_id: str | None = None
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            conn.request("GET", "/stream", headers=headers)
            answer = conn.getresponse()
            if answer.status != 200:
                with tally.lock:
                    tally.errors.append(f"/stream answered {answer.status}")
                continue
            resumed = last_id is not None
            with tally.lock:
                tally.resumed_with_id += 1 if resumed else 0
            events = 0
            while not stop.is_set():
                line = answer.readline()
                if not line:
                    break  # the stream ended: the instance is stopping
                if line.startswith(b"id: "):
                    last_id = line[4:].strip().decode()
                if line.startswith(b"event: price"):
                    events += 1
                    if events == 1 and resumed:
                        with tally.lock:
                            tally.resumed_with_events += 1
        except OSError as exc:
            if not stop.is_set():
                with tally.lock:
                    tally.errors.append(f"stream {type(exc).__name__}: {exc}")
            continue
        finally:
            conn.close()
        if not stop.is_set():
            with tally.lock:
                tally.reconnects[index] = tally.reconnects.get(index, 0) + 1
        time.sleep(0.2)  # the retry: the stream announced is 1 s; shorter here


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, deleted afterwards."""
    import redis

    name = f"rollout-{uuid.uuid4().hex[:8]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)


def test_a_rolling_update_under_load_loses_no_request(
    ops: SimpleNamespace, launcher: Any, redis_url: str, prefix: str
) -> None:
    exchange = launcher.fake_exchange("--rate", "20")
    urls = dict(w.split("=", 1) for w in exchange.log_text().split() if w.startswith("BINANCE_"))
    env = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "WS_LEADER_LOCK_TTL_SECONDS": "2"}
    env |= {"RATE_LIMIT_ENABLED": "0", "TRUSTED_PROXIES": "1", "GRACEFUL_TIMEOUT": "30", **urls}

    def start() -> Any:
        running = launcher.gunicorn("websocket-streaming", workers=1, **env)
        ops.wait_until(lambda: ops.answers(f"{running.url}/readyz"), 60, "the new instance ready")
        return running

    root = launcher.tmp / "nginx"
    lb_port, db_port = ops.free_port(), ops.free_port()

    def values(instances: list[Any]) -> dict[str, str | list[str]]:
        return {
            "SARDAG_ACCESS_LOG": str(root / "access.log"),
            "SARDAG_TRACE_SAMPLE_PERCENT": "10",  # nginx's trace sampling (tracing is off here)
            "SARDAG_WEBSOCKET_STREAMING_LISTEN": f"127.0.0.1:{lb_port}",
            "SARDAG_WEBSOCKET_STREAMING_UPSTREAM": [f"127.0.0.1:{r.port}" for r in instances],
            "SARDAG_DATABASE_SERVICE_LISTEN": f"127.0.0.1:{db_port}",
            "SARDAG_DATABASE_SERVICE_UPSTREAM": [f"127.0.0.1:{ops.free_port()}"],
        }

    pods = [start(), start()]
    conf = ops.render_nginx(root, values(pods))
    nginx = launcher.start("nginx", ops.nginx_argv(conf), ops.base_env(root))
    ops.wait_until(lambda: ops.answers(f"http://127.0.0.1:{lb_port}/readyz"), 20, "nginx")
    tally, stop = Tally(), threading.Event()
    threads = [threading.Thread(target=_reader, args=(lb_port, tally, stop)) for _ in range(READERS)]
    threads += [
        threading.Thread(target=_subscriber, args=(i, lb_port, tally, stop)) for i in range(SUBSCRIBERS)
    ]
    for thread in threads:
        thread.start()
    took = []
    try:
        time.sleep(2)
        for _ in range(2):  # replace both pods, one at a time
            surge = start()  # maxSurge 1: the new pod is ready first
            old = pods.pop(0)
            pods.append(surge)
            ops.render_nginx(root, values(pods))  # the endpoint removal
            nginx.process.send_signal(signal.SIGHUP)
            time.sleep(PRESTOP_SECONDS)  # preStop: still serving what is in flight
            began = time.monotonic()
            assert old.stop(timeout=40) == 0, old.log_tail()  # SIGTERM: graceful stop
            took.append(time.monotonic() - began)
            time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    answered = sum(tally.statuses.values())
    print(
        f"\nrolling update of 2 instances behind nginx: {answered} REST reads {tally.statuses},"
        f" errors {len(tally.errors)}; SSE reconnects per client {tally.reconnects},"
        f" {tally.resumed_with_id} resumed with Last-Event-ID ({tally.resumed_with_events} delivered events);"
        f" SIGTERM to exit {[round(t, 2) for t in took]} s"
    )
    assert tally.errors == []
    assert set(tally.statuses) == {200}
    assert answered > 100
    assert all(tally.reconnects.get(i, 0) >= 1 for i in range(SUBSCRIBERS))  # told to reconnect
    assert tally.resumed_with_id >= SUBSCRIBERS
    assert tally.resumed_with_events == tally.resumed_with_id  # every resumed stream flowed again
    assert all(t < 30 for t in took)  # within GRACEFUL_TIMEOUT: the grace period is never reached
