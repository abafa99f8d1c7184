"""A real Prometheus scrapes both running services with the alerting and recording rules
loaded: every rule evaluates, a feed outage makes its alert pending, the SLO ratios are
recorded for both services, every dashboard query (the SLO row included) returns series."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.api,
    pytest.mark.websocket,
    pytest.mark.database,
]

SCRAPE_SECONDS = 1
# Grafana's variables, as Grafana would fill them for a 1 s scrape interval.
VARIABLES = {"$__rate_interval": "30s", "$__interval": "2s", "$__range": "5m"}
HISTORY_LIMIT = 3  # low per-route limit on /signals/history, so the 429 panel has data
DB_WORKERS = 2  # without Redis each worker limits on its own: up to HISTORY_LIMIT per worker
ONLY_WITH_REDIS = {"sardag_redis_fallback_total"}  # these services run without Redis here
_JOBS = ("database-service", "websocket-streaming")


def _dashboard_queries(repo: Path) -> list[tuple[str, str, str]]:
    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for panel in panels for p in (panel, *walk(panel.get("panels", [])))]

    dashboard = json.loads((repo / "deploy/grafana/dashboards/sardag.json").read_text())
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in walk(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def _substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _prometheus_config(repo: Path, targets: dict[str, str], path: Path) -> None:
    """deploy/prometheus/prometheus.yml with loopback targets, its rules, a 1 s interval."""
    from ruamel.yaml import YAML

    prometheus_dir = repo / "deploy/prometheus"
    config = YAML(typ="safe").load((prometheus_dir / "prometheus.yml").read_text())
    config["global"].update(
        scrape_interval=f"{SCRAPE_SECONDS}s",
        scrape_timeout=f"{SCRAPE_SECONDS}s",
        evaluation_interval=f"{SCRAPE_SECONDS}s",
    )
    config["rule_files"] = [str(prometheus_dir / pattern) for pattern in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        # Compose finds the instances through Docker's DNS; here they are on loopback.
        names = [f"{name}:{sd['port']}" for sd in job.pop("dns_sd_configs", []) for name in sd["names"]]
        names += [t for static in job.get("static_configs", []) for t in static["targets"]]
        job["static_configs"] = [{"targets": [targets[name] for name in names if name in targets]}]
        if job["static_configs"][0]["targets"]:
            jobs.append(job)
    config["scrape_configs"] = jobs
    path.write_text(json.dumps(config))


def _start_prometheus(ops: SimpleNamespace, launcher: Any, targets: dict[str, str]) -> str:
    binary = ops.find_tool("prometheus")
    config = launcher.tmp / "prometheus.yml"
    _prometheus_config(ops.REPO, targets, config)
    port = ops.free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={launcher.tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    process = launcher.start("prometheus", argv, ops.base_env(launcher.tmp), port)
    ops.wait_until(lambda: ops.answers(f"{process.url}/-/ready"), 30, "Prometheus to be ready")
    return process.url


def _targets_up(ops: SimpleNamespace, prometheus: str, jobs: set[str]) -> bool:
    _, body = ops.http("GET", f"{prometheus}/api/v1/targets")
    up = {t["labels"]["job"] for t in body["data"]["activeTargets"] if t["health"] == "up"}
    return jobs <= up


def _query(ops: SimpleNamespace, prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    status, body = ops.http("GET", url, timeout=10)
    assert isinstance(body, dict), f"HTTP {status}: {body}"
    return body


def _fake_exchange_urls(exchange: Any) -> dict[str, str]:
    match = re.search(r"BINANCE_WS_URL=(\S+) BINANCE_REST_URL=(\S+)", exchange.log_tail())
    assert match, f"fake exchange printed no URLs:\n{exchange.log_tail()}"
    return {"BINANCE_WS_URL": match[1], "BINANCE_REST_URL": match[2]}


def _wait_for_prices(ops: SimpleNamespace, url: str) -> None:
    ops.wait_until(lambda: ops.answers(f"{url}/price/BTCUSDT"), 30, "a first price from the fake exchange")


def _traffic(ops: SimpleNamespace, db: str, ws: str) -> None:
    """Successes, client errors, 404s and 429s on both services."""
    for index in range(5):
        signal = {"symbol": "ETHUSDT", "action": "SELL", "price": 3000 + index, "strategy": "ops"}
        status, body = ops.http("POST", f"{db}/signals/save", signal)
        assert status == 201, body
        ops.http("GET", f"{db}/signals/{body.get('id', body.get('signal', {}).get('id'))}")
        trade = {"symbol": "ETHUSDT", "entry_price": 3000, "exit_price": 3010 + index, "strategy": "ops"}
        status, body = ops.http("POST", f"{db}/performance/track", trade)
        assert status == 201, body
        ops.http("POST", f"{db}/signals/save", {"symbol": "ETHUSDT", "action": "NOPE", "price": -1})
        ops.http("GET", f"{db}/signals/999999999")
        ops.http("GET", f"{ws}/price/BTCUSDT")
        ops.http("GET", f"{ws}/prices")
        ops.http("GET", f"{ws}/price/NOTTRACKED")
    statuses = [ops.http("GET", f"{db}/signals/history")[0] for _ in range(HISTORY_LIMIT * DB_WORKERS + 3)]
    assert 429 in statuses, f"no 429 from /signals/history with limit {HISTORY_LIMIT}: {statuses}"


def _rules_evaluate(ops: SimpleNamespace, prometheus: str) -> list[dict[str, Any]]:
    """Every alerting rule, once each has been evaluated without an error."""
    _, body = ops.http("GET", f"{prometheus}/api/v1/rules?type=alert")
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert rules, "Prometheus loaded no alerting rules"
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] == "err"]
    assert not broken, broken
    return rules if all(r["health"] == "ok" for r in rules) else []


def _recording_rules_evaluate(ops: SimpleNamespace, prometheus: str) -> list[dict[str, Any]]:
    """Every recording rule (the SLO ratios), once each has been evaluated without an error."""
    _, body = ops.http("GET", f"{prometheus}/api/v1/rules?type=record")
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] == "err"]
    assert not broken, broken
    return rules if rules and all(r["health"] == "ok" for r in rules) else []


def _alert_states(ops: SimpleNamespace, prometheus: str) -> dict[str, str]:
    _, body = ops.http("GET", f"{prometheus}/api/v1/alerts")
    return {alert["labels"]["alertname"]: alert["state"] for alert in body["data"]["alerts"]}


def _upstream(ops: SimpleNamespace, ws: str) -> dict[str, Any]:
    """The upstream check's detail in websocket-streaming's /health (connected, reconnects...)."""
    try:
        _, body = ops.http("GET", f"{ws}/health")
    except OSError:
        return {}
    detail: dict[str, Any] = body.get("checks", {}).get("upstream", {}).get("detail", {})
    return detail


def _reconnect(ops: SimpleNamespace, launcher: Any, exchange: Any, ws: str) -> Any:
    """Restart the fake exchange on its port; return once the service saw the drop and reconnected.

    /health answers 200 while disconnected too (degraded), so the wait is on the upstream
    check itself: disconnected first, then connected again with one more reconnect counted.
    """
    before = int(_upstream(ops, ws)["reconnects"])
    exchange.stop(timeout=10)
    ops.wait_until(lambda: _upstream(ops, ws).get("connected") is False, 30, "the service to see the drop")
    restarted = launcher.start(f"{exchange.name}-again", exchange.process.args, exchange.env, exchange.port)

    def reconnected() -> bool:
        upstream = _upstream(ops, ws)
        return upstream.get("connected") is True and int(upstream.get("reconnects", 0)) > before

    ops.wait_until(reconnected, 60, "websocket-streaming to reconnect to the restarted exchange")
    return restarted


def test_every_dashboard_query_returns_series(ops: SimpleNamespace, launcher: Any) -> None:
    exchange = launcher.fake_exchange()
    # a short backoff cap: the reconnect after the exchange's restart comes within seconds
    urls = _fake_exchange_urls(exchange)
    ws = launcher.gunicorn("websocket-streaming", workers=1, WS_BACKOFF_CAP_SECONDS="2", **urls)
    db = launcher.gunicorn(
        "database-service", workers=DB_WORKERS, RATE_LIMIT_SIGNALS_HISTORY=str(HISTORY_LIMIT)
    )
    prometheus = _start_prometheus(
        ops,
        launcher,
        {"database-service:5020": f"127.0.0.1:{db.port}", "websocket-streaming:5021": f"127.0.0.1:{ws.port}"},
    )
    jobs = {*_JOBS}
    ops.wait_until(lambda: _targets_up(ops, prometheus, jobs), 30, "both scrape targets up")
    _wait_for_prices(ops, ws.url)
    exchange = _reconnect(ops, launcher, exchange, ws.url)
    _traffic(ops, db.url, ws.url)
    time.sleep(5 * SCRAPE_SECONDS)
    _traffic(ops, db.url, ws.url)
    rules = ops.wait_until(lambda: _rules_evaluate(ops, prometheus), 30, "every alerting rule evaluated")
    records = ops.wait_until(lambda: _recording_rules_evaluate(ops, prometheus), 30, "every SLO ratio recorded")
    for slo, jobs in (
        ("availability", {*_JOBS}),
        ("latency", {*_JOBS}),
        ("freshness", {"websocket-streaming"}),
    ):
        result = _query(ops, prometheus, f"job:sardag_slo_{slo}_errors:ratio_rate5m")["data"]["result"]
        assert {series["metric"]["job"] for series in result} == jobs, (slo, result)
    _, stats = ops.http("GET", f"{ws.url}/stats")
    print(f"websocket-streaming /stats latency: {json.dumps(stats['latency'])}")
    assert {"aggTrade", "24hrTicker"} <= set(stats["latency"]["exchange_to_received"]), stats["latency"]
    assert stats["latency"]["clock_offset_seconds"] is not None, "Binance's clock was never read"
    # The feed goes away: its alert must go pending (it fires after its `for`, 1 minute).
    exchange.stop(timeout=10)
    states = ops.wait_until(
        lambda: (s := _alert_states(ops, prometheus)).get("SardagFeedDisconnected") == "pending" and s,
        30,
        "SardagFeedDisconnected to be pending",
    )
    print(f"{len(rules)} alerting, {len(records)} recording rules evaluated; active, feed stopped: {states}")
    queries_read = [rule["query"] for rule in (*rules, *records)]
    for metric in sorted(
        {m for query in queries_read for m in re.findall(r"(?<![:a-z])sardag_[a-z0-9_]+", query)}
    ):
        if metric not in ONLY_WITH_REDIS:
            assert _query(ops, prometheus, metric)["data"]["result"], f"an alert reads {metric}, never exported"
    queries = _dashboard_queries(ops.REPO)
    assert len(queries) >= 10, "the dashboard lost panels"
    problems = []
    for title, ref, expr in queries:
        body = _query(ops, prometheus, _substitute(expr))
        if body.get("status") != "success":
            problems.append(f"{title}/{ref}: {body.get('error')}")
        elif not body["data"]["result"]:
            problems.append(f"{title}/{ref}: no series for {_substitute(expr)}")
        else:
            print(f"{title}/{ref}: {len(body['data']['result'])} series")
    assert not problems, "\n".join(problems)
