"""deploy/k8s: both overlays render with kubectl's kustomize, validate with kubernetes-validate
--strict for the three newest Kubernetes minors it knows, and pass the policy below; each
check is shown failing on a broken copy (a typo, a missing key, a probe on an unserved
route, an object no schema covers)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from shared.testing.processes import REPO, VENV_BIN

pytestmark = pytest.mark.integration  # they start kubectl and kubernetes-validate

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
APPS = ("database-service", "websocket-streaming")
SECRET = "sardag"  # the one Secret the overlays reference, created by the operator
NO_SCHEMA = "Couldn't find schema"  # kubernetes-validate only warns (exit 0) for unknown kinds
# Variables the images set or gunicorn.conf.py reads that compose leaves to the image.
IMAGE_ENV = {"PROMETHEUS_MULTIPROC_DIR": "/tmp/sardag-metrics", "GRACEFUL_TIMEOUT": "30"}
SSE_HEARTBEAT_SECONDS = 15  # the default; the Ingress must outlast many heartbeats
ADAPTER_RULES = K8S / "prometheus-adapter" / "rules.yaml"
Objects = list[dict[str, Any]]


def tool(name: str) -> str:
    """The project's own pinned tool from the test extra (a host kubectl is never used)."""
    path = VENV_BIN / name
    assert path.is_file(), f"{path} missing: install the test extra (scripts/bootstrap.sh)"
    return str(path)


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl kustomize` of one overlay."""
    return subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )


def rendered(directory: Path) -> Objects:
    """The overlay's objects; fails with kustomize's own message."""
    result = kustomize(directory)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def newest_versions(count: int = 3) -> list[str]:
    """The newest `count` Kubernetes minors kubernetes-validate has schemas for."""
    from kubernetes_validate.utils import all_versions, major_minor

    minors = sorted({major_minor(v) for v in all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    return minors[-count:]


def validate(path: Path, version: str) -> list[str]:
    """kubernetes-validate --strict's complaints about `path` (an unknown kind is one)."""
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (result.stdout + result.stderr).splitlines()
    problems = [line for line in lines if line.startswith("ERROR") or NO_SCHEMA in line]
    assert problems or result.returncode == 0, "\n".join(lines)
    return problems


# ---- what the policy compares the manifests with ----------------------------------------


def compose_services() -> dict[str, dict[str, Any]]:
    """docker-compose.yml's services (anchors merged)."""
    services: dict[str, dict[str, Any]] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return services


def served_get_routes(data: Path) -> dict[str, set[str]]:
    """Every GET path without a placeholder that each app's URL map serves."""
    from database_service import create_app as database_app
    from websocket_streaming import create_app as streaming_app

    apps: dict[str, Flask] = {
        "database-service": database_app(
            {"TESTING": True, "DATABASE_URL": f"sqlite:///{data}/routes.db", "REDIS_URL": None}
        ),
        "websocket-streaming": streaming_app({"TESTING": True, "INGEST_ENABLED": False, "REDIS_URL": None}),
    }
    return {
        name: {r.rule for r in app.url_map.iter_rules() if "GET" in (r.methods or ()) and "<" not in r.rule}
        for name, app in apps.items()
    }


def known_variables(service: str) -> set[str]:
    """What `service` reads: its declared settings, and what compose or the image passes it."""
    from shared.config import SHARED_SETTINGS, service_settings

    declared = {s.name for s in (*SHARED_SETTINGS, *service_settings(service).settings)}
    return declared | set(compose_services()[service].get("environment", {})) | set(IMAGE_ENV)


def env_file_keys(path: Path) -> set[str]:
    """The keys of a KEY=value file (secrets.env.example)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def adapter_metrics() -> set[str]:
    """The custom metric names the Prometheus Adapter rules expose."""
    return {rule["name"]["as"] for rule in yaml.safe_load(ADAPTER_RULES.read_text())["rules"]}


# ---- the policy --------------------------------------------------------------------------


def by_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def workloads(objects: Objects) -> dict[str, dict[str, Any]]:
    return {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}


def policy(objects: Objects, overlay: Path, routes: dict[str, set[str]]) -> list[str]:
    """Every violation of the rules below in one overlay's rendered objects."""
    problems: list[str] = []
    for name, workload in workloads(objects).items():
        problems += [f"{name}: {p}" for p in _hardening(workload)]
        if name in APPS:
            problems += [f"{name}: {p}" for p in _app(name, workload, objects, routes)]
    problems += _references(objects, overlay)
    problems += _disruption_budgets(objects)
    problems += _autoscalers(objects)
    problems += _streaming_ingress(objects)
    return problems


def _hardening(workload: dict[str, Any]) -> Iterator[str]:
    pod = workload["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    for container in pod["containers"] + pod.get("initContainers", []):
        security = {**pod_security, **container.get("securityContext", {})}
        label = f"container {container['name']}"
        if security.get("runAsNonRoot") is not True:
            yield f"{label} may run as root (runAsNonRoot)"
        if security.get("readOnlyRootFilesystem") is not True:
            yield f"{label} has a writable root filesystem"
        if security.get("allowPrivilegeEscalation") is not False:
            yield f"{label} allows privilege escalation"
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            yield f"{label} keeps capabilities (drop ALL)"
        if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            yield f"{label} has no RuntimeDefault seccomp profile"
        resources = container.get("resources", {})
        for kind, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
            if key not in resources.get(kind, {}):
                yield f"{label} has no resources.{kind}.{key}"
        image = container["image"]
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            yield f"{label} image {image} has no pinned tag"


def _app(name: str, workload: dict[str, Any], objects: Objects, routes: dict[str, set[str]]) -> Iterator[str]:
    pod = workload["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    expected = compose_services()[name]["image"]
    if container["image"] != expected:
        yield f"image {container['image']} is not the one docker-compose.yml builds ({expected})"
    probes = {
        kind: container.get(f"{kind}Probe", {}).get("httpGet", {}).get("path")
        for kind in ("liveness", "readiness", "startup")
    }
    if probes["liveness"] != "/livez" or probes["readiness"] != "/readyz" or probes["startup"] is None:
        yield f"probes {probes}: liveness must be /livez, readiness /readyz, and a startupProbe set"
    for kind, path in probes.items():
        if path is not None and path not in routes[name]:
            yield f"{kind}Probe path {path} is not a route {name} serves"
    env = _environment(container, objects)
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for path in ("/tmp", env.get("PROMETHEUS_MULTIPROC_DIR", IMAGE_ENV["PROMETHEUS_MULTIPROC_DIR"])):
        if mounts.get(path) not in empty_dirs:
            yield f"{path} is not an emptyDir mount (the root filesystem is read-only)"
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    graceful = float(env.get("GRACEFUL_TIMEOUT", IMAGE_ENV["GRACEFUL_TIMEOUT"]))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not pre_stop or grace < pre_stop + graceful:
        yield f"terminationGracePeriodSeconds {grace} < preStop sleep {pre_stop} + GRACEFUL_TIMEOUT {graceful}"
    allowed = known_variables(name)
    for key in env:
        if key not in allowed:
            yield f"variable {key} is neither a setting of {name} nor one compose passes it (a typo?)"


def _environment(container: dict[str, Any], objects: Objects) -> dict[str, str]:
    """The container's variables: literal values, ConfigMap values, and Secret keys (value '')."""
    config_maps = by_kind(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        env.update(config_maps.get(name, {}).get("data", {}))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "")
    return env


def _references(objects: Objects, overlay: Path) -> Iterator[str]:
    """Every ConfigMap and Secret key a container names exists."""
    config_maps = by_kind(objects, "ConfigMap")
    secret_keys = env_file_keys(overlay / "secrets.env.example")
    for name, workload in workloads(objects).items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref is not None and ref not in config_maps:
                    yield f"{name}: envFrom ConfigMap {ref} does not exist"
                if "secretRef" in source:
                    yield f"{name}: envFrom secretRef takes every key, name each one instead"
            for item in container.get("env", []):
                source = item.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    if ref["name"] != SECRET or ref["key"] not in secret_keys:
                        where = f"{overlay.name}/secrets.env.example"
                        yield f"{name}: Secret {ref['name']} key {ref['key']} is not in {where}"
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    if ref["key"] not in config_maps.get(ref["name"], {}).get("data", {}):
                        yield f"{name}: ConfigMap {ref['name']} has no key {ref['key']}"


def _streaming_ingress(objects: Objects) -> Iterator[str]:
    """SSE through ingress-nginx: unbuffered, and read timeouts far above the heartbeat."""
    annotations = by_kind(objects, "Ingress")["websocket-streaming"]["metadata"].get("annotations", {})
    prefix = "nginx.ingress.kubernetes.io/"
    if annotations.get(f"{prefix}proxy-buffering") != "off":
        yield "Ingress websocket-streaming buffers responses: SSE events would be held back"
    least = 10 * SSE_HEARTBEAT_SECONDS
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        if int(annotations.get(prefix + timeout, 60)) < least:
            yield f"Ingress websocket-streaming {timeout} under {least} s: quiet streams are cut"


def _disruption_budgets(objects: Objects) -> Iterator[str]:
    deployments = by_kind(objects, "Deployment")
    for name, budget in by_kind(objects, "PodDisruptionBudget").items():
        selected = [
            d
            for d in deployments.values()
            if budget["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if len(selected) != 1:
            yield f"PodDisruptionBudget {name} selects {len(selected)} Deployments"
            continue
        replicas = selected[0]["spec"].get("replicas", 1)
        if budget["spec"].get("minAvailable", 0) >= replicas:
            minimum = budget["spec"]["minAvailable"]
            yield f"PodDisruptionBudget {name} minAvailable {minimum} >= replicas {replicas}: drains block"


def _autoscalers(objects: Objects) -> Iterator[str]:
    deployments = by_kind(objects, "Deployment")
    exposed = adapter_metrics()
    for name, hpa in by_kind(objects, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            yield f"HPA {name} targets {target['kind']} {target['name']}, which does not exist"
            continue
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] not in exposed:
                yield f"HPA {name}: no Prometheus Adapter rule exposes {metric['pods']['metric']['name']}"
        if target["name"] == "database-service":
            yield from _connection_budget(hpa, deployments["database-service"], objects)


def _connection_budget(hpa: dict[str, Any], deployment: dict[str, Any], objects: Objects) -> Iterator[str]:
    """DATABASE_POOL_SIZE x WEB_CONCURRENCY x maxReplicas <= the budget written on the HPA."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = _environment(container, objects)
    pool, workers = int(env.get("DATABASE_POOL_SIZE", 8)), int(env.get("WEB_CONCURRENCY", 2))
    budget = hpa["metadata"].get("annotations", {}).get("sardag.example/postgres-connection-budget")
    if budget is None:
        yield "HPA database-service has no sardag.example/postgres-connection-budget annotation"
    elif pool * workers * hpa["spec"]["maxReplicas"] > int(budget):
        yield (
            f"HPA database-service: pool {pool} x workers {workers} x maxReplicas "
            f"{hpa['spec']['maxReplicas']} = {pool * workers * hpa['spec']['maxReplicas']} > budget {budget}"
        )


# ---- the checks on the shipped manifests -----------------------------------------------


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    return served_get_routes(tmp_path_factory.mktemp("routes"))


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly_on_the_three_newest_minors(
    overlay: str, tmp_path: Path
) -> None:
    output = tmp_path / f"{overlay}.yaml"
    result = kustomize(K8S / "overlays" / overlay)
    assert result.returncode == 0, result.stderr
    output.write_text(result.stdout)
    versions = newest_versions()
    assert len(versions) == 3
    for version in versions:
        assert validate(output, version) == [], version


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_policy(overlay: str, routes: dict[str, set[str]]) -> None:
    objects = rendered(K8S / "overlays" / overlay)
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Ingress", "NetworkPolicy"} <= {
        o["kind"] for o in objects
    }
    assert policy(objects, K8S / "overlays" / overlay, routes) == []


def test_prod_autoscales_both_services_on_their_own_signals() -> None:
    hpas = by_kind(rendered(K8S / "overlays" / "prod"), "HorizontalPodAutoscaler")
    signals = {
        name: {
            m.get("resource", m.get("pods", {})).get("name") or m["pods"]["metric"]["name"]
            for m in h["spec"]["metrics"]
        }
        for name, h in hpas.items()
    }
    assert signals == {
        "database-service": {"cpu", "sardag_http_requests_per_second"},
        "websocket-streaming": {"sardag_sse_subscribers"},
    }
    assert hpas["websocket-streaming"]["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600


# ---- each check fails on a broken copy ---------------------------------------------------


@pytest.fixture
def broken(tmp_path: Path) -> Callable[[str, str, str], Path]:
    """Copy deploy/k8s, replace `old` by `new` once in one file; the copy's root."""

    def edit(relative: str, old: str, new: str) -> Path:
        root = tmp_path / "k8s"
        if not root.exists():
            shutil.copytree(K8S, root)
        path = root / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1))
        return root

    return edit


def test_kustomize_names_a_missing_resource(broken: Callable[[str, str, str], Path]) -> None:
    root = broken("base/kustomization.yaml", "  - ingress.yaml", "  - ingres.yaml")
    result = kustomize(root / "overlays" / "prod")
    assert result.returncode != 0
    assert "ingres.yaml" in result.stderr


def test_validation_names_a_misspelt_field(broken: Callable[[str, str, str], Path], tmp_path: Path) -> None:
    root = broken("base/database-service.yaml", "readinessProbe:", "readinesProbe:")
    output = tmp_path / "prod.yaml"
    output.write_text(kustomize(root / "overlays" / "prod").stdout)
    (problem,) = validate(output, newest_versions()[-1])
    assert "deployment/database-service" in problem
    assert "'readinesProbe' was unexpected" in problem


def test_validation_refuses_an_object_it_has_no_schema_for(tmp_path: Path) -> None:
    # A CRD (here prometheus-operator's ServiceMonitor) would pass kubernetes-validate with
    # only a warning; this suite counts it as a failure, so one is never added unchecked.
    crd = tmp_path / "servicemonitor.yaml"
    crd.write_text(
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {}\n"
    )
    (problem,) = validate(crd, newest_versions()[-1])
    assert "Couldn't find schema for kind ServiceMonitor" in problem


@pytest.mark.parametrize(
    ("relative", "old", "new", "complaint"),
    [
        pytest.param(
            "base/database-service.yaml",
            "path: /readyz",
            "path: /ready",
            "database-service: readinessProbe path /ready is not a route database-service serves",
            id="probe-on-unserved-route",
        ),
        pytest.param(
            "overlays/prod/secrets.env.example",
            "API_KEY=",
            "APIKEY=",
            "database-service: Secret sardag key API_KEY is not in prod/secrets.env.example",
            id="missing-secret-key",
        ),
        pytest.param(
            "base/kustomization.yaml",
            "DATABASE_POOL_SIZE=4",
            "DATABASE_POOLSIZE=4",
            "database-service: variable DATABASE_POOLSIZE is neither a setting of database-service",
            id="config-key-typo",
        ),
        pytest.param(
            "base/websocket-streaming.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "websocket-streaming: container websocket-streaming has a writable root filesystem",
            id="writable-root",
        ),
        pytest.param(
            "base/websocket-streaming.yaml",
            "image: sardag/websocket-streaming:local",
            "image: sardag/websocket-streaming:latest",
            "image sardag/websocket-streaming:latest has no pinned tag",
            id="latest-tag",
        ),
        pytest.param(
            "overlays/prod/kustomization.yaml",
            "value: 2",
            "value: 3",
            "PodDisruptionBudget database-service minAvailable 3 >= replicas 3",
            id="pdb-blocks-drains",
        ),
        pytest.param(
            "overlays/prod/hpa.yaml",
            "    name: websocket-streaming\n  minReplicas",
            "    name: websocket-stream\n  minReplicas",
            "HPA websocket-streaming targets Deployment websocket-stream, which does not exist",
            id="hpa-target-missing",
        ),
        pytest.param(
            "base/ingress.yaml",
            'proxy-buffering: "off"',
            'proxy-buffering: "on"',
            "Ingress websocket-streaming buffers responses",
            id="sse-buffered",
        ),
        pytest.param(
            "overlays/prod/hpa.yaml",
            "maxReplicas: 10",
            "maxReplicas: 11",
            "pool 4 x workers 2 x maxReplicas 11 = 88 > budget 80",
            id="over-connection-budget",
        ),
        pytest.param(
            "base/database-service.yaml",
            "terminationGracePeriodSeconds: 40",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds 30 < preStop sleep 5 + GRACEFUL_TIMEOUT 30",
            id="grace-shorter-than-gunicorn",
        ),
    ],
)
def test_policy_names_each_broken_case(
    broken: Callable[[str, str, str], Path],
    routes: dict[str, set[str]],
    relative: str,
    old: str,
    new: str,
    complaint: str,
) -> None:
    root = broken(relative, old, new)
    overlay = root / "overlays" / "prod"
    problems = policy(rendered(overlay), overlay, routes)
    assert any(complaint in problem for problem in problems), problems


def test_the_connection_budget_arithmetic_is_what_the_docs_state() -> None:
    objects = rendered(K8S / "overlays" / "prod")
    (container,) = by_kind(objects, "Deployment")["database-service"]["spec"]["template"]["spec"]["containers"]
    env = _environment(container, objects)
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["database-service"]
    total = int(env["DATABASE_POOL_SIZE"]) * int(env["WEB_CONCURRENCY"]) * hpa["spec"]["maxReplicas"]
    assert total == 80
    written = "DATABASE_POOL_SIZE 4 x WEB_CONCURRENCY 2 x maxReplicas 10 = 80"
    assert written in (K8S / "overlays" / "prod" / "hpa.yaml").read_text()
    assert written in (REPO / "docs" / "kubernetes.md").read_text()
