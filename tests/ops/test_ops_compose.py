"""docker-compose.yml: the official schema (check-jsonschema) and the wiring DESIGN.md asks for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest

APP_PORTS = {"database-service": 5020, "websocket-streaming": 5021}
MONITORING = {"prometheus", "grafana"}
ALL_SERVICES = {"redis", "timescaledb", *APP_PORTS, *MONITORING}
SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|DSN)", re.IGNORECASE)
REQUIRED_REF = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]+\}$")
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)")


@pytest.fixture(scope="module")
def compose_path(ops: SimpleNamespace) -> Path:
    return ops.REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose(compose_path: Path) -> dict[str, Any]:
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(compose_path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.integration
@pytest.mark.slow
def test_compose_validates_against_compose_spec(compose_path: Path, ops: SimpleNamespace) -> None:
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        ops.missing("check-jsonschema is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(compose_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


@pytest.mark.unit
def test_no_version_key_and_expected_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose
    assert set(compose["services"]) == ALL_SERVICES


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_app_service_build_and_env(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    assert svc["build"] == {"context": ".", "dockerfile": f"{name}/Dockerfile"}
    assert ".env" in _as_list(svc["env_file"])
    env = svc["environment"]
    assert _masked_url(env["DATABASE_URL"])[0].hostname == "timescaledb"
    assert _masked_url(env["REDIS_URL"])[0].hostname == "redis"
    assert env["BIND"] == "0.0.0.0"
    assert REQUIRED_REF.match(env["API_KEY"]), "BIND 0.0.0.0 needs a required API_KEY"
    assert str(env["PORT"]) == str(APP_PORTS[name])


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_app_service_port_health_restart(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    port = APP_PORTS[name]
    assert any(str(p).endswith(f":{port}:{port}") for p in svc["ports"]), svc["ports"]
    test = " ".join(_as_list(svc["healthcheck"]["test"]))
    assert f"127.0.0.1:{port}/health" in test
    assert svc["restart"] in {"always", "unless-stopped", "on-failure"}


@pytest.mark.unit
def test_depends_on_waits_for_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "database-service": {"timescaledb", "redis"},
        "websocket-streaming": {"redis"},
        "grafana": {"prometheus"},
    }
    for name, deps in expected.items():
        depends = services[name]["depends_on"]
        assert set(depends) == deps, name
        for dep, rule in depends.items():
            assert rule["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], f"{dep} has no healthcheck to wait for"
    # Prometheus only waits for the services to start, so it can report one that is down.
    prometheus = services["prometheus"]["depends_on"]
    assert {dep: rule["condition"] for dep, rule in prometheus.items()} == dict.fromkeys(
        APP_PORTS, "service_started"
    )


@pytest.mark.unit
def test_timescaledb_pinned_volume_and_healthcheck(compose: dict[str, Any]) -> None:
    db = compose["services"]["timescaledb"]
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg17", db["image"]), db["image"]
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "timescaledb data must be a named volume"
    test = " ".join(_as_list(db["healthcheck"]["test"]))
    assert "pg_isready" in test
    assert "$$POSTGRES_USER" in test


@pytest.mark.unit
def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if "image" in svc and "build" not in svc:
            tag = svc["image"].rpartition(":")[2]
            assert re.search(r"\d", tag), f"{name}: {svc['image']} has no version"
            assert "latest" not in tag, f"{name}: {svc['image']}"


@pytest.mark.unit
def test_monitoring_pair_under_profile(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        expected = ["monitoring"] if name in MONITORING else None
        assert svc.get("profiles") == expected, name


@pytest.mark.unit
def test_monitoring_mounts_exist(compose: dict[str, Any], ops: SimpleNamespace) -> None:
    for name in MONITORING:
        for volume in compose["services"][name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ops.REPO / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.unit
def test_no_literal_secret(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for key, value in _env_items(svc):
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.match(str(value)), f"{name}.{key} must be ${{{key}:?...}}"
            _assert_url_password_is_reference(f"{name}.{key}", str(value))


@pytest.mark.unit
def test_every_variable_is_documented_in_env_example(compose: dict[str, Any], ops: SimpleNamespace) -> None:
    example = (ops.REPO / ".env.example").read_text()
    used = {var for text in _strings(compose) for var in VAR_REF.findall(text)}
    assert {"API_KEY", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= used
    for var in used:
        assert re.search(rf"^#? ?{var}=", example, re.MULTILINE), f"{var} not in .env.example"


def _masked_url(value: str) -> tuple[SplitResult, list[str]]:
    """Split a URL whose parts may be ${...} references (each replaced by refNx)."""
    refs = re.findall(r"\$\{[^}]*\}", value)
    masked = value
    for index, ref in enumerate(refs):
        masked = masked.replace(ref, f"ref{index}x", 1)
    return urlsplit(masked), refs


def _assert_url_password_is_reference(where: str, value: str) -> None:
    if "://" not in value:
        return
    url, refs = _masked_url(value)
    password = url.password
    if password is None:
        return
    match = re.fullmatch(r"ref(\d+)x", password)
    assert match, f"{where}: literal password in URL"
    assert REQUIRED_REF.match(refs[int(match[1])]), f"{where}: password must be ${{VAR:?...}}"


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def _env_items(svc: dict[str, Any]) -> list[tuple[str, Any]]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return [tuple(item.split("=", 1)) for item in env]  # type: ignore[misc]
    return list(env.items())


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [v["path"] if isinstance(v, dict) else v for v in value]
    return [value]
