"""The rules every rendered Kubernetes object of deploy/k8s must follow, as a list of problems.

Each check returns messages naming the object and what is wrong, so a failing test says
what to fix. The inputs are what the repository itself states: the apps' URL maps (probe
paths), docker-compose.yml (image tags) and each overlay's secrets.env.example (the keys
the Secret must hold; the Secret is created outside the manifests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
# Kinds kubernetes-validate knows (built into Kubernetes). A custom resource added to the
# manifests fails `unvalidated_kinds` until it is validated another way.
BUILT_IN_API_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
SHUTDOWN_MARGIN_SECONDS = 5  # gunicorn's master exits after its workers


def load(text: str) -> list[Obj]:
    """The objects of a rendered multi-document YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def name(obj: Obj) -> str:
    """`Kind/name` for messages."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def workloads(objects: Iterable[Obj]) -> list[Obj]:
    """The objects that run pods."""
    return [o for o in objects if o["kind"] in WORKLOADS]


def containers(workload: Obj) -> list[Obj]:
    """Every container (init containers too) of a workload's pod template."""
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def security_problems(objects: list[Obj]) -> list[str]:
    """Non-root, read-only root filesystem, no capabilities, no escalation, RuntimeDefault seccomp."""
    problems = []
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"].get("securityContext", {})
        for c in containers(workload):
            sc, where = c.get("securityContext", {}), f"{name(workload)} container {c['name']}"
            if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities do not drop ALL")
            seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            if ":" not in c["image"].rsplit("/", 1)[-1] or c["image"].endswith(":latest"):
                problems.append(f"{where}: image {c['image']} has no pinned tag")
    return problems


def resource_problems(objects: list[Obj]) -> list[str]:
    """CPU and memory requests and a memory limit on every container."""
    problems = []
    for workload in workloads(objects):
        for c in containers(workload):
            res = c.get("resources", {})
            for path in ("requests.cpu", "requests.memory", "limits.memory"):
                section, key = path.split(".")
                if key not in res.get(section, {}):
                    problems.append(f"{name(workload)} container {c['name']}: resources.{path} not set")
    return problems


def probe_problems(objects: list[Obj], served: Mapping[str, set[str]]) -> list[str]:
    """Every service container has startup, liveness and readiness probes on routes its app serves.

    `served`: container name -> the paths its Flask app's URL map answers.
    """
    problems = []
    for workload in workloads(objects):
        for c in containers(workload):
            if c["name"] not in served:
                continue
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = c.get(probe, {}).get("httpGet")
                where = f"{name(workload)} container {c['name']} {probe}"
                if get is None:
                    problems.append(f"{where}: no httpGet probe")
                elif get["path"] not in served[c["name"]]:
                    problems.append(f"{where}: path {get['path']} is not a route the app serves")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/livez":
                problems.append(
                    f"{name(workload)} container {c['name']}: liveness must be /livez (no dependency)"
                )
    return problems


def _env_config(workload: Obj, objects: list[Obj], key: str) -> str | None:
    """The value `key` gets from the ConfigMaps a workload's first container reads whole."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    for source in containers(workload)[0].get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and key in maps.get(ref["name"], {}):
            return str(maps[ref["name"]][key])
    return None


def reference_problems(objects: list[Obj], secret_keys: Mapping[str, set[str]]) -> list[str]:
    """Every ConfigMap and Secret key a pod reads exists (Secrets: as the overlay declares them)."""
    maps = {o["metadata"]["name"]: set(o.get("data", {})) for o in objects if o["kind"] == "ConfigMap"}
    problems = []
    for workload in workloads(objects):
        for c in containers(workload):
            where = f"{name(workload)} container {c['name']}"
            for source in c.get("envFrom", []):
                if "configMapRef" in source and source["configMapRef"]["name"] not in maps:
                    problems.append(f"{where}: ConfigMap {source['configMapRef']['name']} does not exist")
                if "secretRef" in source and source["secretRef"]["name"] not in secret_keys:
                    problems.append(f"{where}: Secret {source['secretRef']['name']} is not declared")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    cm, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                    if key not in maps.get(cm, set()):
                        problems.append(f"{where}: env {env['name']} reads missing key {key} of ConfigMap {cm}")
                if "secretKeyRef" in ref:
                    secret, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                    if key not in secret_keys.get(secret, set()):
                        problems.append(
                            f"{where}: env {env['name']} reads undeclared key {key} of Secret {secret}"
                        )
    return problems


def image_problems(objects: list[Obj], compose_images: Mapping[str, str]) -> list[str]:
    """The service containers run the image (and tag) compose builds; other images match compose's."""
    problems = []
    for workload in workloads(objects):
        for c in containers(workload):
            wanted = compose_images.get(c["name"])
            if wanted is not None and c["image"] != wanted:
                problems.append(
                    f"{name(workload)} container {c['name']}: image {c['image']} != compose's {wanted}"
                )
    return problems


def _replicas_floor(objects: list[Obj], target: str) -> int:
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    for hpa in hpas:
        if hpa["spec"]["scaleTargetRef"]["name"] == target:
            return int(hpa["spec"].get("minReplicas", 1))
    deployment = next(o for o in workloads(objects) if o["metadata"]["name"] == target)
    return int(deployment["spec"].get("replicas", 1))


def disruption_problems(objects: list[Obj]) -> list[str]:
    """Each PDB selects a workload and leaves at least one pod evictable."""
    problems = []
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            w
            for w in workloads(objects)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        if not matched:
            problems.append(f"{name(pdb)}: selects no workload")
            continue
        floor = _replicas_floor(objects, matched[0]["metadata"]["name"])
        if "minAvailable" in pdb["spec"] and int(pdb["spec"]["minAvailable"]) >= floor:
            problems.append(f"{name(pdb)}: minAvailable {pdb['spec']['minAvailable']} >= replicas {floor}")
        if "maxUnavailable" in pdb["spec"] and int(pdb["spec"]["maxUnavailable"]) < 1:
            problems.append(f"{name(pdb)}: maxUnavailable below 1 blocks every drain")
    return problems


def autoscaling_problems(objects: list[Obj]) -> list[str]:
    """Every HPA targets an existing workload; database-service's maximum fits PostgreSQL's budget."""
    problems = []
    present = {(o["kind"], o["metadata"]["name"]) for o in workloads(objects)}
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in present:
            problems.append(f"{name(hpa)}: target {ref['kind']}/{ref['name']} does not exist")
            continue
        notes = hpa["metadata"].get("annotations", {})
        if "sardag.io/postgres-max-connections" in notes:
            problems += _budget_problems(objects, hpa, notes)
    return problems


def connection_budget(objects: list[Obj], hpa: Obj) -> tuple[int, int]:
    """(connections at the HPA's maximum plus the rollout's surge, what the server allows the app)."""
    workload = next(
        o for o in workloads(objects) if o["metadata"]["name"] == hpa["spec"]["scaleTargetRef"]["name"]
    )
    pool = int(_env_config(workload, objects, "DATABASE_POOL_SIZE") or 8)
    workers = int(_env_config(workload, objects, "WEB_CONCURRENCY") or 2)
    surge = int(workload["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", 1))
    used = pool * workers * (int(hpa["spec"]["maxReplicas"]) + surge)
    notes = hpa["metadata"]["annotations"]
    allowed = int(notes["sardag.io/postgres-max-connections"]) - int(
        notes["sardag.io/postgres-reserved-connections"]
    )
    return used, allowed


def _budget_problems(objects: list[Obj], hpa: Obj, notes: Mapping[str, str]) -> list[str]:
    used, allowed = connection_budget(objects, hpa)
    if used > allowed:
        return [
            f"{name(hpa)}: pool x workers x (maxReplicas + maxSurge) = {used} > {allowed} PostgreSQL allows"
        ]
    return []


def shutdown_problems(objects: list[Obj]) -> list[str]:
    """terminationGracePeriodSeconds covers the preStop sleep, gunicorn's graceful timeout and a margin."""
    problems = []
    for workload in workloads(objects):
        graceful = _env_config(workload, objects, "GRACEFUL_TIMEOUT")
        if graceful is None:
            continue
        spec = workload["spec"]["template"]["spec"]
        pre_stop = (
            containers(workload)[0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        )
        needed = int(pre_stop) + int(graceful) + SHUTDOWN_MARGIN_SECONDS
        period = int(spec.get("terminationGracePeriodSeconds", 30))
        if period < needed:
            problems.append(
                f"{name(workload)}: terminationGracePeriodSeconds {period}"
                f" < preStop {pre_stop} + GRACEFUL_TIMEOUT {graceful} + {SHUTDOWN_MARGIN_SECONDS}"
            )
        if not pre_stop:
            problems.append(f"{name(workload)}: no preStop sleep (traffic still routed at SIGTERM)")
    return problems


def unvalidated_kinds(objects: list[Obj]) -> list[str]:
    """Objects whose API group kubernetes-validate has no schema for (custom resources)."""
    return [f"{name(o)} ({o['apiVersion']})" for o in objects if o["apiVersion"] not in BUILT_IN_API_GROUPS]


def secret_contract(example: Path) -> dict[str, set[str]]:
    """Secret name -> keys, from an overlay's secrets.env.example (the Secret sardag-secrets)."""
    keys = set()
    for line in example.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.add(line.split("=", 1)[0])
    return {"sardag-secrets": keys}


def all_problems(
    objects: list[Obj],
    served: Mapping[str, set[str]],
    compose_images: Mapping[str, str],
    secret_keys: Mapping[str, set[str]],
) -> list[str]:
    """Every rule above, over one rendered overlay."""
    return [
        *security_problems(objects),
        *resource_problems(objects),
        *probe_problems(objects, served),
        *reference_problems(objects, secret_keys),
        *image_problems(objects, compose_images),
        *disruption_problems(objects),
        *autoscaling_problems(objects),
        *shutdown_problems(objects),
        *unvalidated_kinds(objects),
    ]
