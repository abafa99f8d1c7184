"""Prometheus config (promtool), Grafana provisioning and the dashboard's queries, statically."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

DASHBOARD = "deploy/grafana/dashboards/sardag.json"
PROMETHEUS_YML = "deploy/prometheus/prometheus.yml"
# Each panel the issue asks for, by a word of its title, and the metric its queries use.
REQUIRED_PANELS = {
    "request rate": "sardag_http_requests_total",
    "error rate": "sardag_http_requests_total",
    "p95 latency": "sardag_http_request_duration_seconds_bucket",
    "429": "sardag_rate_limited_total",
    "signals saved": "sardag_signals_saved_total",
    "trades tracked": "sardag_trades_tracked_total",
    "messages/s": "sardag_ws_messages_total",
    "connection": "sardag_ws_connected",
    "reconnects": "sardag_ws_reconnects_total",
    "price age": "sardag_price_updated_timestamp_seconds",
}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def load_dashboard(repo: Path) -> dict[str, Any]:
    return json.loads((repo / DASHBOARD).read_text())


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_queries(repo: Path) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) for every Prometheus target of the dashboard."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in walk_panels(load_dashboard(repo)["panels"])
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    for name, value in variables.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


@pytest.mark.integration
def test_promtool_check_config(ops: SimpleNamespace) -> None:
    promtool = ops.find_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(ops.REPO / PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.unit
def test_prometheus_scrapes_every_instance_of_both_services(ops: SimpleNamespace) -> None:
    """DNS discovery: one target per replica of each compose service (`--scale` included)."""
    from ruamel.yaml import YAML

    config = YAML(typ="safe").load((ops.REPO / PROMETHEUS_YML).read_text())
    jobs = {job["job_name"]: job.get("dns_sd_configs", []) for job in config["scrape_configs"]}
    for service, port in (("database-service", 5020), ("websocket-streaming", 5021)):
        assert [(sd["names"], sd["type"], sd["port"]) for sd in jobs[service]] == [([service], "A", port)]


@pytest.mark.integration
def test_every_dashboard_query_is_valid_promql(ops: SimpleNamespace, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule: a syntax error fails the check."""
    promtool = ops.find_tool("promtool")
    rules = [
        {"record": f"sardag:check_{index}", "expr": substitute(expr)}
        for index, (_, _, expr) in enumerate(dashboard_queries(ops.REPO))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_dashboard_has_every_required_panel(ops: SimpleNamespace) -> None:
    queries = dashboard_queries(ops.REPO)
    for word, metric in REQUIRED_PANELS.items():
        matching = [expr for title, _, expr in queries if word in title.lower()]
        assert matching, f"no panel titled with {word!r}"
        assert any(metric in expr for expr in matching), f"{word!r} panel does not query {metric}"


@pytest.mark.unit
def test_dashboard_uses_only_documented_metrics(ops: SimpleNamespace) -> None:
    documented = set(re.findall(r"sardag_[a-z0-9_]+", (ops.REPO / "docs/shared-api.md").read_text()))
    rule_files = (ops.REPO / "deploy/prometheus/rules").glob("*.rules.yml")
    recorded = {name for path in rule_files for name in re.findall(r"record: (\S+)", path.read_text())}
    for title, ref, expr in dashboard_queries(ops.REPO):
        for metric in re.findall(r"(?<![:a-z])sardag_[a-z0-9_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert base in documented, f"{title}/{ref}: {metric} is not in docs/shared-api.md"
        for series in re.findall(r"[a-z_]+:sardag_[a-z0-9_:]+", expr):  # a recording rule's
            assert series in recorded, f"{title}/{ref}: {series} is recorded by no rule"


@pytest.mark.unit
def test_dashboard_datasource_is_the_provisioned_uid(ops: SimpleNamespace) -> None:
    from ruamel.yaml import YAML

    provisioning = ops.REPO / "deploy/grafana/provisioning"
    sources = YAML(typ="safe").load((provisioning / "datasources/prometheus.yml").read_text())
    uids = {source["uid"] for source in sources["datasources"]}
    assert uids == {"sardag-prometheus"}
    for panel in walk_panels(load_dashboard(ops.REPO)["panels"]):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids, panel["title"]


@pytest.mark.unit
def test_dashboard_provider_points_at_the_mounted_folder(ops: SimpleNamespace) -> None:
    from ruamel.yaml import YAML

    provider_file = ops.REPO / "deploy/grafana/provisioning/dashboards/sardag.yml"
    providers = YAML(typ="safe").load(provider_file.read_text())["providers"]
    compose = YAML(typ="safe").load((ops.REPO / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == providers[0]["options"]["path"]
    assert providers[0]["folder"]


@pytest.mark.unit
def test_dashboard_shows_the_alert_states(ops: SimpleNamespace) -> None:
    """An alert list of Prometheus's rules and a table of the ALERTS series, at the top."""
    from ruamel.yaml import YAML

    panels = list(walk_panels(load_dashboard(ops.REPO)["panels"]))
    provisioning = ops.REPO / "deploy/grafana/provisioning/datasources/prometheus.yml"
    sources = YAML(typ="safe").load(provisioning.read_text())
    prometheus = sources["datasources"][0]
    assert prometheus["jsonData"]["manageAlerts"] is True, "Grafana lists the rules of a managed source only"
    lists = [p for p in panels if p["type"] == "alertlist"]
    assert [p["options"]["datasource"] for p in lists] == [prometheus["name"]]
    assert all(lists[0]["options"]["stateFilter"][state] for state in ("firing", "pending", "normal"))
    assert lists[0]["gridPos"]["y"] <= 1, "alerts come first"
    assert any("ALERTS" in expr for _, _, expr in dashboard_queries(ops.REPO))
