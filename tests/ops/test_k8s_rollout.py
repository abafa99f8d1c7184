"""A rolling update of websocket-streaming under load, in the order a Deployment with
overlays/prod's settings runs it: a surge pod starts and becomes ready (/readyz), the old pod
leaves the endpoints, preStop sleeps, SIGTERM, gunicorn drains. The Service is modelled by
the clients, who pick a random endpoint among the ready ones for each request (as kube-proxy
does for each connection); everything else is the real services under gunicorn and Redis.

What must hold: no REST read fails, and every SSE subscriber, told to reconnect when its
pod stops, resumes on a new pod with Last-Event-ID."""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.websocket, pytest.mark.redis]


def deployment(ops: SimpleNamespace) -> dict[str, Any]:
    """websocket-streaming's Deployment as the base declares it."""
    docs = yaml.safe_load_all((ops.REPO / "deploy/k8s/base/websocket-streaming.yaml").read_text())
    found: dict[str, Any] = next(d for d in docs if d["kind"] == "Deployment")
    return found


@dataclass
class Endpoints:
    """The Service's ready endpoints (ports), changed as the controller would."""

    ports: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self) -> int:
        with self.lock:
            return random.choice(self.ports)

    def replace(self, ports: list[int]) -> None:
        with self.lock:
            self.ports = list(ports)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def reader(endpoints: Endpoints, stop: threading.Event, statuses: list[int]) -> None:
    while not stop.is_set():
        statuses.append(get(endpoints.pick(), "/prices"))


@dataclass
class Subscriber:
    """An EventSource: reads /stream, reconnects to the Service with Last-Event-ID when it ends."""

    endpoints: Endpoints
    last_id: str | None = None
    connections: list[tuple[int, str | None, int]] = field(default_factory=list)  # port, sent id, status
    events: int = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            port = self.endpoints.pick()
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/stream", headers=headers)
                response = conn.getresponse()
                self.connections.append((port, self.last_id, response.status))
                while not stop.is_set():
                    line = response.fp.readline()
                    if not line:
                        break  # the server ended the stream: reconnect
                    if line.startswith(b"id: "):
                        self.last_id = line[4:].strip().decode()
                        self.events += 1
            except OSError:
                self.connections.append((port, self.last_id, 0))
            finally:
                conn.close()
            time.sleep(0.2)  # the retry: delay an EventSource waits


def test_rolling_update_under_load_loses_no_request(
    ops: SimpleNamespace, launcher: Any, clean_redis: str
) -> None:
    pod = deployment(ops)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod["terminationGracePeriodSeconds"]
    exchange = launcher.fake_exchange("--rate", "20")
    urls = dict(re.findall(r"(BINANCE_WS_URL|BINANCE_REST_URL)=(\S+)", exchange.log_text()))
    settings = {"REDIS_URL": clean_redis, "RATE_LIMIT_ENABLED": "0", "GRACEFUL_TIMEOUT": "30", **urls}

    def start_pod() -> Any:
        running = launcher.gunicorn("websocket-streaming", workers=2, wait=False, **settings)
        ops.wait_until(lambda: ops.answers(f"{running.url}/readyz"), 60, f"{running.name} ready")
        return running

    old = [start_pod(), start_pod()]
    endpoints = Endpoints([p.port for p in old])
    stop, statuses = threading.Event(), []
    subscribers = [Subscriber(endpoints) for _ in range(4)]
    threads = [threading.Thread(target=reader, args=(endpoints, stop, statuses)) for _ in range(4)]
    threads += [threading.Thread(target=s.run, args=(stop,)) for s in subscribers]
    for thread in threads:
        thread.start()
    stopped: list[tuple[str, float]] = []
    try:
        time.sleep(2)
        current = [p.port for p in old]
        for retiring in old:  # maxSurge 1, maxUnavailable 0
            surge = start_pod()
            current = [*current, surge.port]
            endpoints.replace(current)
            current.remove(retiring.port)
            endpoints.replace(current)  # the old pod leaves the endpoints ...
            time.sleep(pre_stop)  # ... while preStop sleeps
            began = time.monotonic()
            retiring.stop(timeout=grace)  # SIGTERM; SIGKILL after the grace period
            stopped.append((retiring.name, time.monotonic() - began))
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    failed = [s for s in statuses if s != 200]
    resumed = [c for s in subscribers for c in s.connections[1:]]
    print(
        f"\n{len(statuses)} reads during two pod replacements, {len(failed)} failed; "
        f"SIGTERM to exit: {[(n, round(t, 2)) for n, t in stopped]}; "
        f"SSE: {sum(s.events for s in subscribers)} events, {len(resumed)} reconnections"
    )
    assert statuses
    assert failed == []
    assert all(seconds < grace - pre_stop for _, seconds in stopped)
    for subscriber in subscribers:
        assert subscriber.connections[0][2] == 200
        # every reconnection sent Last-Event-ID and was answered by a live pod
        assert all(sent is not None and status == 200 for _, sent, status in subscriber.connections[1:])
        assert subscriber.connections[-1][0] not in {p.port for p in old}
    assert redis.Redis.from_url(clean_redis).ping()
