"""A simulation of the HPA controller on real measurements: each service under gunicorn is
loaded, a real Prometheus scrapes it with the labels the pod-annotation job gives, the
Prometheus Adapter rules' PromQL (deploy/k8s/prometheus-adapter/rules.yaml) is read back as
a range, and the HPA algorithm with overlays/prod/hpa.yaml's targets, bounds, tolerance and
stabilisation is applied to it: it must scale up under the load and back down after.

Not a cluster: one process carries the whole Deployment's load, and the simulation spreads
it over the simulated replicas as the Service would. The stabilisation windows are divided
by TIME_SCALE (30) so CI runs the two in about three minutes; K8S_AUTOSCALING_LONG=1 uses the real
windows (over fifteen minutes of idling). The load is Python threads (REST) and raw sockets
(SSE subscribers), not k6 and Locust. Not simulated: the CPU metric and scale-down rate
policies (websocket-streaming's one pod per 5 minutes)."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

LONG = os.environ.get("K8S_AUTOSCALING_LONG") == "1"
TIME_SCALE = 1 if LONG else 30
NAMESPACE = "sardag"
PODS = {
    "database-service": "database-service-7d9f-abcde",
    "websocket-streaming": "websocket-streaming-5c8b-fghij",
}
TOLERANCE = 0.1  # the controller's default --horizontal-pod-autoscaler-tolerance


@dataclass(frozen=True)
class Autoscaler:
    """What the simulation needs of one HPA's Pods metric."""

    target: float
    minimum: int
    maximum: int
    down_window: float
    up_window: float = 0.0


def simulate(samples: list[tuple[float, float]], hpa: Autoscaler) -> list[tuple[float, int]]:
    """Replicas over time: desired = ceil(current x metric / target), tolerance, min/max, windows.

    `samples` are (time, total load) pairs; the per-pod metric is the total over the current
    replicas. Scale-down follows the highest recommendation of the last `down_window`
    seconds, scale-up the lowest of the last `up_window` (the controller's stabilisation).
    """
    replicas, history, timeline = hpa.minimum, [], []
    for at, total in samples:
        ratio = total / replicas / hpa.target
        desired = replicas if abs(ratio - 1) <= TOLERANCE else math.ceil(replicas * ratio)
        desired = max(hpa.minimum, min(hpa.maximum, desired))
        history.append((at, desired))
        down = max(d for t, d in history if t >= at - hpa.down_window)
        up = min(d for t, d in history if t >= at - hpa.up_window)
        replicas = up if up > replicas else min(replicas, down)
        timeline.append((at, replicas))
    return timeline


@pytest.mark.unit
def test_simulation_follows_the_controller_rules() -> None:
    hpa = Autoscaler(target=10, minimum=2, maximum=5, down_window=3)
    load = [(0, 20), (1, 21), (2, 100), (3, 100), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0)]
    # 20 over 2 pods is on target; 21 within tolerance; 100 asks for 10, capped at 5; the
    # idle pods stay 3 s (the window), then fall to the minimum
    assert [r for _, r in simulate(load, hpa)] == [2, 2, 5, 5, 5, 5, 5, 2, 2]


def hpa_spec(ops: SimpleNamespace, name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((ops.REPO / "deploy/k8s/overlays/prod/hpa.yaml").read_text()):
        if doc["metadata"]["name"] == name:
            spec: dict[str, Any] = doc["spec"]
            return spec
    raise AssertionError(f"no HPA {name}")


def adapter_query(ops: SimpleNamespace, metric: str, pod: str) -> str:
    """The adapter rule exposing `metric`, its templates filled as the adapter fills them."""
    rules = yaml.safe_load((ops.REPO / "deploy/k8s/prometheus-adapter/rules.yaml").read_text())["rules"]
    (rule,) = [r for r in rules if r["name"]["as"] == metric]
    series = rule["seriesQuery"].split("{", 1)[0]
    query: str = rule["metricsQuery"]
    matchers = f'namespace="{NAMESPACE}",pod=~"{pod}"'
    return (
        query.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )


def start_prometheus(ops: SimpleNamespace, launcher: Any, target: str, pod: str) -> str:
    """A real Prometheus scraping `target` every second with the pod job's labels."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE, "pod": pod}}],
            }
        ],
    }
    path = launcher.tmp / "prometheus.yml"
    path.write_text(json.dumps(config))
    port = ops.free_port()
    argv = [
        ops.find_tool("prometheus"),
        f"--config.file={path}",
        f"--storage.tsdb.path={launcher.tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    process = launcher.start("prometheus", argv, ops.base_env(launcher.tmp), port)
    ops.wait_until(lambda: ops.answers(f"{process.url}/-/ready"), 30, "Prometheus to be ready")
    return str(process.url)


def query_range(
    ops: SimpleNamespace, prometheus: str, expr: str, start: float, end: float
) -> list[tuple[float, float]]:
    """(time, value) of the single series `expr` yields, one sample a second; gaps are 0."""
    first, last = math.ceil(start), int(end)
    params = urllib.parse.urlencode({"query": expr, "start": first, "end": last, "step": 1})
    status, body = ops.http("GET", f"{prometheus}/api/v1/query_range?{params}", timeout=20)
    assert status == 200, body
    assert body["status"] == "success", body
    values = {round(float(t)): float(v) for result in body["data"]["result"] for t, v in result["values"]}
    return [(float(t), values.get(t, 0.0)) for t in range(first, last + 1)]


def scraped(ops: SimpleNamespace, prometheus: str) -> bool:
    """Whether Prometheus has scraped its target in the last two seconds."""
    return query_range(ops, prometheus, "up", time.time() - 2, time.time())[-1][1] == 1


def load(url: str, seconds: float, threads: int = 6) -> int:
    """GET `url` from `threads` threads for `seconds`; the number of answers."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def worker(index: int) -> None:
        while time.monotonic() < stop:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
            counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return sum(counts)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.database
def test_database_service_scales_up_under_load_and_back_down_after(ops: SimpleNamespace, launcher: Any) -> None:
    spec = hpa_spec(ops, "database-service")
    (pods_metric,) = [m["pods"] for m in spec["metrics"] if m["type"] == "Pods"]
    hpa = Autoscaler(
        target=float(pods_metric["target"]["averageValue"]),
        minimum=spec["minReplicas"],
        maximum=spec["maxReplicas"],
        down_window=spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] / TIME_SCALE,
    )
    db = launcher.gunicorn("database-service", workers=2, RATE_LIMIT_ENABLED="0")
    pod = PODS["database-service"]
    prometheus = start_prometheus(ops, launcher, f"127.0.0.1:{db.port}", pod)
    expr = adapter_query(ops, pods_metric["metric"]["name"], pod)
    ops.wait_until(lambda: scraped(ops, prometheus), 30, "the first scrape")
    start = time.time()
    time.sleep(5)  # idle first: the recommendation is the minimum
    answered = load(f"{db.url}/signals/history?limit=1", 20)
    loaded_until = time.time()
    time.sleep(hpa.down_window + 70)  # the 1 m rate decays, then the window passes
    end = time.time()
    samples = query_range(ops, prometheus, expr, start, end)
    timeline = simulate(samples, hpa)
    peak = max(r for _, r in timeline)
    pairs = zip(timeline[1:], timeline[:-1], strict=True)
    changes = [(round(t - start), r) for (t, r), (_, before) in pairs if r != before]
    rate = max(v for _, v in samples)
    print(f"\n{answered} requests in 20 s, peak {rate:.0f} req/s; (s, replicas): {changes}")
    assert timeline[0][1] == hpa.minimum
    assert peak > hpa.minimum, f"no scale-up: {samples}"
    scaled_up_at = next(t for t, r in timeline if r > hpa.minimum)
    assert scaled_up_at <= loaded_until + 2
    assert timeline[-1][1] == hpa.minimum, f"not back down: {timeline[-10:]}"


def open_streams(url: str, count: int) -> list[socket.socket]:
    """`count` SSE subscribers on raw sockets, each past its `: connected` comment."""
    address = urllib.parse.urlsplit(url)
    request = f"GET /stream HTTP/1.1\r\nHost: {address.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode()
    streams = []
    for _ in range(count):
        stream = socket.create_connection((address.hostname, address.port), timeout=10)
        stream.sendall(request)
        streams.append(stream)
    for stream in streams:
        received = b""
        while b": connected" not in received:
            chunk = stream.recv(4096)
            assert chunk, "a stream closed before it was connected"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return streams


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.websocket
def test_websocket_streaming_scales_on_subscribers_and_slowly_back(ops: SimpleNamespace, launcher: Any) -> None:
    spec = hpa_spec(ops, "websocket-streaming")
    (pods_metric,) = [m["pods"] for m in spec["metrics"]]
    hpa = Autoscaler(
        target=float(pods_metric["target"]["averageValue"]),
        minimum=spec["minReplicas"],
        maximum=spec["maxReplicas"],
        down_window=spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] / TIME_SCALE,
    )
    subscribers = math.ceil(hpa.minimum * hpa.target * 1.25)  # a quarter over the target
    exchange = launcher.fake_exchange()
    urls = dict(re.findall(r"(BINANCE_WS_URL|BINANCE_REST_URL)=(\S+)", exchange.log_text()))
    ws = launcher.gunicorn(
        "websocket-streaming",
        workers=1,
        SSE_MAX_SUBSCRIBERS=str(subscribers + 50),
        SSE_HEARTBEAT_SECONDS="1",
        RATE_LIMIT_ENABLED="0",
        **urls,
    )
    pod = PODS["websocket-streaming"]
    prometheus = start_prometheus(ops, launcher, f"127.0.0.1:{ws.port}", pod)
    expr = adapter_query(ops, pods_metric["metric"]["name"], pod)
    ops.wait_until(lambda: scraped(ops, prometheus), 30, "the first scrape")
    start = time.time()
    time.sleep(3)
    streams = open_streams(ws.url, subscribers)
    time.sleep(10)
    closed_at = time.time()
    for stream in streams:
        stream.close()
    time.sleep(hpa.down_window + 10)
    samples = query_range(ops, prometheus, expr, start, time.time())
    timeline = simulate(samples, hpa)
    pairs = zip(timeline[1:], timeline[:-1], strict=True)
    changes = [(round(t - start), r) for (t, r), (_, before) in pairs if r != before]
    print(f"\n{subscribers} subscribers, peak {max(v for _, v in samples):.0f}; (s, replicas): {changes}")
    assert max(v for _, v in samples) == subscribers
    assert max(r for _, r in timeline) > hpa.minimum, f"no scale-up: {samples}"
    # slow scale-down: still scaled up a window after the subscribers left, down at the end
    still_up = [r for t, r in timeline if closed_at + 3 < t < closed_at + hpa.down_window - 2]
    assert still_up
    assert min(still_up) > hpa.minimum
    assert timeline[-1][1] == hpa.minimum, f"not back down: {timeline[-10:]}"
