"""The prod HPAs' signals, measured: a SIMULATION of the Kubernetes HPA controller on real
measurements. No cluster runs here.

k6 (REST) and Locust (SSE) load the real services under gunicorn; a real Prometheus scrapes
them; the PromQL of deploy/k8s/prometheus-adapter/rules.yaml (what Prometheus Adapter would
serve the HPAs) is read back as a series; the HPA algorithm of deploy/k8s/overlays/prod/hpa.yaml
is applied to it: desired = ceil(current x metric / target), no change within the 10 %
tolerance, scale-up / scale-down stabilisation windows (max of the recommendations in the
down window, min in the up window), min/max replicas. Not simulated: the scaling rate
policies (pods per period) and the CPU metric (the multiprocess registry exports no
process CPU).

The measured load is one real pod's; the simulated per-pod value is that total divided by
the simulated replica count (the Service spreads load evenly). CI's short form (~80 s)
divides the targets by LOAD_SCALE (this machine cannot make 200 requests/s per pod on top
of the other tests), the time windows by TIME_SCALE and narrows `rate()`'s [1m] to [10s]
and says so; K8S_AUTOSCALING_LONG=1 runs the windows and the PromQL unchanged (~20 min).
"""

from __future__ import annotations

import math
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from sardag_testing.processes import REPO

LONG = os.environ.get("K8S_AUTOSCALING_LONG") == "1"
LOAD_SCALE = 20  # targets / LOAD_SCALE: 10 requests/s and 10 subscribers per simulated pod
TIME_SCALE = 1 if LONG else 30
WINDOW = "1m" if LONG else "10s"
LOAD_SECONDS = 180 if LONG else 25
COOL_SECONDS = 1000 if LONG else 40
REQUESTS_PER_SECOND = 60  # k6's arrival rate: 6 pods' worth at the scaled target
SUBSCRIBERS = 60  # Locust users, each holding one stream: 6 pods' worth
TOLERANCE = 0.1  # the controller's default --horizontal-pod-autoscaler-tolerance
HPA_FILE = REPO / "deploy/k8s/overlays/prod/hpa.yaml"
ADAPTER_RULES = REPO / "deploy/k8s/prometheus-adapter/rules.yaml"
LOAD = Path(__file__).parent / "load"


@dataclass(frozen=True)
class Hpa:
    """What the simulation needs of one HorizontalPodAutoscaler."""

    name: str
    metric: str
    target: float
    min_replicas: int
    max_replicas: int
    up_window: float
    down_window: float


def load_hpa(name: str, scale_load: float = 1, scale_time: float = 1) -> Hpa:
    """The HPA `name` of hpa.yaml: its Pods metric and behaviour, scaled for a short run."""
    hpa = next(d for d in yaml.safe_load_all(HPA_FILE.read_text()) if d["metadata"]["name"] == name)
    spec = hpa["spec"]
    pods = next(m["pods"] for m in spec["metrics"] if m["type"] == "Pods")
    behavior = spec.get("behavior", {})
    return Hpa(
        name=name,
        metric=pods["metric"]["name"],
        target=float(pods["target"]["averageValue"]) / scale_load,
        min_replicas=int(spec["minReplicas"]),
        max_replicas=int(spec["maxReplicas"]),
        up_window=behavior.get("scaleUp", {}).get("stabilizationWindowSeconds", 0) / scale_time,
        down_window=behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 300) / scale_time,
    )


def simulate(hpa: Hpa, samples: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """Replicas after each controller sync, one per sample of the metric's total over pods."""
    current, history, replicas = hpa.min_replicas, [], []
    for at, total in samples:
        ratio = (total / current) / hpa.target
        desired = current if abs(ratio - 1) <= TOLERANCE else math.ceil(current * ratio)
        desired = min(hpa.max_replicas, max(hpa.min_replicas, desired))
        history.append((at, desired))
        up = min(r for t, r in history if t > at - hpa.up_window or t == at)
        down = max(r for t, r in history if t > at - hpa.down_window or t == at)
        current = min(max(current, up), down)
        replicas.append((at, current))
    return replicas


def adapter_query(metric: str, job: str, window: str = "1m") -> str:
    """The adapter rule's metricsQuery for `metric`, its label matchers naming `job`."""
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    rule = next(r for r in rules if r["name"]["as"] == metric)
    series = rule["name"]["matches"].strip("^$")
    query = rule["metricsQuery"].replace("<<.Series>>", series)
    query = query.replace("<<.LabelMatchers>>", f'job="{job}"').replace("<<.GroupBy>>", "job")
    return query.replace("[1m]", f"[{window}]")


# ---- the simulator itself, on series made up for it --------------------------------------


@pytest.mark.unit
def test_the_simulated_controller_scales_with_tolerance_and_stabilisation() -> None:
    hpa = Hpa("x", "m", target=10, min_replicas=2, max_replicas=8, up_window=0, down_window=5)
    load = [(t, 60.0 if 3 <= t < 10 else 21.0) for t in range(20)]
    replicas = dict(simulate(hpa, [(float(t), v) for t, v in load]))
    assert replicas[0] == 2  # 21 / 2 = 10.5: within 10 % of 10, no change
    assert replicas[3] == 6  # ceil(2 x 30 / 10) at once (no up window)
    assert replicas[9] == 6
    # held while the last high recommendation (t=9) is inside the 5 s down window
    assert [replicas[t] for t in range(10, 14)] == [6] * 4
    assert replicas[14] == 3  # then ceil(6 x 3.5 / 10) = 3 (21 over 6 pods)
    assert max(replicas.values()) <= 8


# ---- the real thing ------------------------------------------------------------------------


def _prometheus(ops: SimpleNamespace, launcher: Any, targets: dict[str, int]) -> str:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }
    path = launcher.tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
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


def _series(
    ops: SimpleNamespace, prometheus: str, query: str, start: float, end: float
) -> list[tuple[float, float]]:
    """`query` over [start, end] at 1 s steps; absent points are 0 (no series yet)."""
    start, end = math.ceil(start), math.floor(end)  # whole seconds: the points fall on them
    params = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": "1"})
    status, body = ops.http("GET", f"{prometheus}/api/v1/query_range?{params}", timeout=30)
    assert status == 200, body
    assert body["status"] == "success", body
    points = {float(t): float(v) for result in body["data"]["result"] for t, v in result["values"]}
    return [(float(t), points.get(float(t), 0.0)) for t in range(start, end + 1)]


def _first(replicas: list[tuple[float, int]], after: float, test: Any) -> float | None:
    return next((t for t, r in replicas if t >= after and test(r)), None)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.api
@pytest.mark.database
@pytest.mark.websocket
def test_each_hpa_scales_up_under_load_and_back_down_after(ops: SimpleNamespace, launcher: Any) -> None:
    exchange = launcher.fake_exchange("--rate", "5")
    urls = dict(line.split("=", 1) for line in exchange.log_text().split() if line.startswith("BINANCE_"))
    # every Locust subscriber comes from 127.0.0.1: the per-client stream cap is not under test
    ws = launcher.gunicorn("websocket-streaming", workers=1, SSE_MAX_STREAMS_PER_CLIENT="1000", **urls)
    db = launcher.gunicorn("database-service", workers=2, RATE_LIMIT_ENABLED="0")
    prometheus = _prometheus(ops, launcher, {"database-service": db.port, "websocket-streaming": ws.port})
    ops.wait_until(lambda: ops.answers(f"{ws.url}/readyz"), 30, "a first price")
    k6 = [ops.find_tool("k6"), "run", "--quiet", "--no-usage-report", str(LOAD / "rest.js")]
    k6_env = {**ops.base_env(launcher.tmp), "BASE": db.url, "RATE": str(REQUESTS_PER_SECOND)}
    k6_env["DURATION"] = f"{LOAD_SECONDS}s"
    locust = [ops.find_tool("locust"), "-f", str(LOAD / "sse_subscribers.py"), "--headless", "--only-summary"]
    locust += ["-u", str(SUBSCRIBERS), "-r", str(SUBSCRIBERS), "-t", f"{LOAD_SECONDS}s", "--host", ws.url]
    time.sleep(5)  # a quiet baseline
    start = time.time() - 5
    rest = launcher.start("k6", k6, k6_env)
    sse = launcher.start("locust", locust, ops.base_env(launcher.tmp))
    for load in (rest, sse):
        assert load.process.wait(LOAD_SECONDS + 60) == 0, load.log_tail()
    load_end = time.time()
    time.sleep(COOL_SECONDS)
    end = time.time()
    print(
        f"\nSIMULATION of the HPA controller on real measurements (time / {TIME_SCALE}, targets / {LOAD_SCALE})"
    )
    for name, job in (("database-service", "database-service"), ("websocket-streaming", "websocket-streaming")):
        hpa = load_hpa(name, LOAD_SCALE, TIME_SCALE)
        query = adapter_query(hpa.metric, job, WINDOW)
        samples = _series(ops, prometheus, query, start, end)
        replicas = simulate(hpa, samples)
        peak = max(r for _, r in replicas)
        floor = hpa.min_replicas
        down_at = _first(replicas, load_end, lambda r, floor=floor: r == floor)
        after = None if down_at is None else round(down_at - load_end)
        print(f"  {name}: {query}")
        print(
            f"    peak metric {max(v for _, v in samples):.1f} (target {hpa.target:g}/pod),"
            f" replicas {floor} -> {peak} -> {replicas[-1][1]},"
            f" back at min {after} s after the load (down window {hpa.down_window:g} s)"
        )
        assert peak >= floor + 2, f"{name} did not scale up under load: {replicas}"
        assert replicas[-1][1] == floor, f"{name} did not scale back down: {replicas[-12:]}"
        assert down_at is not None, f"{name} never came back to {floor}"
        assert down_at - load_end >= hpa.down_window * 0.8, f"{name} scaled down inside its window"
