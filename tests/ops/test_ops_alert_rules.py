"""Alerting rules: promtool checks and unit-tests them; every alert is tested firing and not
firing, reads documented metrics, and links to its section of docs/runbook.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

RULES = "deploy/prometheus/rules/sardag.rules.yml"
# every rule file Prometheus loads (rules/*.rules.yml), each with its tests beside the others
RULE_FILES = sorted(
    str(p.relative_to(p.parents[3]))
    for p in Path(__file__).parents[2].glob("deploy/prometheus/rules/*.rules.yml")
)
TEST_FILES = [f.replace("/rules/", "/tests/").replace(".rules.yml", ".rules.test.yml") for f in RULE_FILES]
# What the issue asks an alert for, by a word of the alert's name.
REQUIRED = ("PriceFeedStale", "FeedDisconnected", "NoUpstreamLeader", "HighErrorRate", "HighLatencyP99")
REQUIRED += ("RedisFallbackActive", "DatabaseUnavailable", "RateLimitRejectionsSpiking", "TargetDown")
REQUIRED += ("AvailabilityBudgetBurnFast", "AvailabilityBudgetBurnSlow", "LatencyBudgetBurnFast")
REQUIRED += ("LatencyBudgetBurnSlow", "FreshnessBudgetBurnFast", "FreshnessBudgetBurnSlow")
REQUIRED += ("ExchangeToServedLatencyHigh",)
# The SLO error ratios, recorded per service over every window the burn-rate alerts read.
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def load_yaml(path: Path) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(path.read_text())


def rules(repo: Path) -> list[dict[str, Any]]:
    """Every rule (alerting and recording) of every rule file."""
    groups = [group for path in RULE_FILES for group in load_yaml(repo / path)["groups"]]
    return [rule for group in groups for rule in group["rules"]]


def alerts(repo: Path) -> dict[str, dict[str, Any]]:
    """Every alerting rule, by name."""
    return {rule["alert"]: rule for rule in rules(repo) if "alert" in rule}


def promtool(ops: SimpleNamespace, *args: str) -> str:
    argv = [ops.find_tool("promtool"), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=ops.REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.integration
def test_promtool_check_rules(ops: SimpleNamespace) -> None:
    output = promtool(ops, "check", "rules", *RULE_FILES)
    assert output.count("SUCCESS") == len(RULE_FILES), output
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", output))
    assert found == len(rules(ops.REPO))


@pytest.mark.integration
@pytest.mark.parametrize(  # the SLO tests evaluate three days of samples
    "tests", [pytest.param(f, marks=pytest.mark.slow) if "/slo." in f else f for f in TEST_FILES]
)
def test_promtool_test_rules(ops: SimpleNamespace, tests: str) -> None:
    output = promtool(ops, "test", "rules", tests)
    print(output)
    assert "SUCCESS" in output


@pytest.mark.unit
def test_every_slo_ratio_is_recorded_over_every_window(ops: SimpleNamespace) -> None:
    recorded = {rule["record"] for rule in rules(ops.REPO) if "record" in rule}
    for slo in ("availability", "latency", "freshness"):
        for window in SLO_WINDOWS:
            assert f"job:sardag_slo_{slo}_errors:ratio_rate{window}" in recorded, (slo, window)


@pytest.mark.unit
def test_every_required_alert_exists(ops: SimpleNamespace) -> None:
    names = list(alerts(ops.REPO))
    for word in REQUIRED:
        assert any(word in name for name in names), f"no alert for {word}"


@pytest.mark.unit
def test_every_alert_is_tested_firing_and_not_firing(ops: SimpleNamespace) -> None:
    cases: dict[str, set[bool]] = {}
    for group in [g for path in TEST_FILES for g in load_yaml(ops.REPO / path)["tests"]]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for name in alerts(ops.REPO):
        assert cases.get(name) == {True, False}, f"{name}: tested firing/not firing = {cases.get(name)}"


@pytest.mark.unit
def test_every_alert_links_to_its_runbook_section(ops: SimpleNamespace) -> None:
    runbook = (ops.REPO / "docs/runbook.md").read_text()
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", runbook, re.MULTILINE | re.DOTALL))
    for name, rule in alerts(ops.REPO).items():
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name in sections, f"docs/runbook.md has no '## {name}' section"
        assert "Check:" in sections[name], f"{name}: the runbook says nothing to check"
        assert "Do:" in sections[name], f"{name}: the runbook says nothing to do"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name


@pytest.mark.unit
def test_alerts_read_documented_metrics(ops: SimpleNamespace) -> None:
    documented = set(re.findall(r"sardag_[a-z0-9_]+", (ops.REPO / "docs/shared-api.md").read_text()))
    for rule in rules(ops.REPO):
        name = rule.get("alert") or rule["record"]
        for metric in re.findall(r"(?<![:a-z])sardag_[a-z0-9_]+", rule["expr"]):
            assert re.sub(r"_(bucket|sum|count)$", "", metric) in documented, f"{name}: {metric}"


@pytest.mark.unit
def test_prometheus_loads_the_rules_in_compose(ops: SimpleNamespace) -> None:
    config = load_yaml(ops.REPO / "deploy/prometheus/prometheus.yml")
    prometheus_dir = ops.REPO / "deploy/prometheus"
    loaded = {path for pattern in config["rule_files"] for path in prometheus_dir.glob(pattern)}
    assert loaded == {ops.REPO / path for path in RULE_FILES}, "the glob must load the rules, not their tests"
    assert ops.REPO / RULES in loaded
    volumes = load_yaml(ops.REPO / "docker-compose.yml")["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in volumes
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
