"""docker-compose.yml: the official schema (check-jsonschema) and the wiring docs/design.md asks for."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest

APP_PORTS = {"database-service": 5020, "websocket-streaming": 5021}
MONITORING = {"prometheus", "grafana", "jaeger"}
ALL_SERVICES = {"redis", "timescaledb", "nginx", *APP_PORTS, *MONITORING}
# Which containers may hold each secret (issue 11: no service gets .env as a whole).
SECRET_HOLDERS = {
    "API_KEY": {"database-service"},
    "POSTGRES_PASSWORD": {"timescaledb", "database-service"},
    "REDIS_PASSWORD": {"redis", "database-service", "websocket-streaming"},
    "GRAFANA_ADMIN_PASSWORD": {"grafana"},
    "SENTRY_DSN": {"database-service", "websocket-streaming"},
}
COMPOSE_REF = re.compile(r"\$\$|\$\{([A-Za-z0-9_]+)(?:(:?[-?])([^}]*))?\}")
ENVIRON_READ = re.compile(r"os\.environ(?:\.get|\.setdefault)?[\[(]\s*\"([A-Z0-9_]+)\"")
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
@pytest.mark.parametrize("file_name", ["docker-compose.yml", "docker-compose.redis-ha.yml"])
def test_compose_validates_against_compose_spec(file_name: str, ops: SimpleNamespace) -> None:
    compose_path = ops.REPO / file_name
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
    assert "env_file" not in svc, "a service must not get .env as a whole"
    env = svc["environment"]
    assert _masked_url(env["REDIS_URL"])[0].hostname == "redis"
    assert env["BIND"] == "0.0.0.0"
    assert str(env["TRUSTED_PROXIES"]) == "1", "nginx is one trusted hop"
    assert str(env["PORT"]) == str(APP_PORTS[name])
    if name == "database-service":
        assert _masked_url(env["DATABASE_URL"])[0].hostname == "timescaledb"
        assert REQUIRED_REF.match(env["API_KEY"]), "BIND 0.0.0.0 needs a required API_KEY"
    else:
        assert "DATABASE_URL" not in env
        assert "API_KEY" not in env
        assert str(env["ALLOW_UNAUTHENTICATED"]) == "1", "no API_KEY: 0.0.0.0 must be allowed explicitly"


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_app_service_scales_behind_nginx(compose: dict[str, Any], name: str) -> None:
    """`docker compose up --scale <service>=N` must not fail on a published port or a name."""
    svc = compose["services"][name]
    assert "ports" not in svc
    assert "container_name" not in svc
    assert svc["deploy"]["replicas"] >= 2
    port = APP_PORTS[name]
    test = " ".join(_as_list(svc["healthcheck"]["test"]))
    assert f"127.0.0.1:{port}/health" in test
    assert svc["restart"] in {"always", "unless-stopped", "on-failure"}
    nginx = compose["services"]["nginx"]
    assert f"${{SARDAG_PUBLISH_ADDR:-127.0.0.1}}:{port}:{port}" in nginx["ports"]


@pytest.mark.unit
def test_nginx_renders_every_template_variable(compose: dict[str, Any], ops: SimpleNamespace) -> None:
    nginx = compose["services"]["nginx"]
    assert "./deploy/nginx/templates:/etc/nginx/templates:ro" in nginx["volumes"]
    env = nginx["environment"]
    templates = sorted((ops.REPO / "deploy/nginx/templates").glob("*.template"))
    used = {name for path in templates for name in re.findall(r"\$\{(\w+)\}", path.read_text())}
    assert used, "no template variables found"
    given = {key for key in env if key.startswith("SARDAG_")}
    assert used == given, f"template uses {sorted(used)}, compose sets {sorted(given)}"
    # The image's envsubst must leave nginx's own $variables alone.
    assert all(re.search(env["NGINX_ENVSUBST_FILTER"], name) for name in used)
    assert not re.search(env["NGINX_ENVSUBST_FILTER"], "host")
    assert env["SARDAG_DATABASE_SERVICE_UPSTREAM"] == "database-service:5020"
    assert env["SARDAG_WEBSOCKET_STREAMING_UPSTREAM"] == "websocket-streaming:5021"


@pytest.mark.unit
@pytest.mark.parametrize("secret", sorted(SECRET_HOLDERS))
def test_each_secret_reaches_only_the_containers_that_need_it(
    compose: dict[str, Any], ops: SimpleNamespace, secret: str
) -> None:
    dotenv = _sentinel_dotenv(ops.REPO)
    holders = {
        name
        for name in compose["services"]
        if any(dotenv[secret] in value for value in _container_env(compose, name, dotenv).values())
    }
    assert holders == SECRET_HOLDERS[secret]


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(APP_PORTS))
def test_each_service_gets_only_variables_it_reads(
    compose: dict[str, Any], ops: SimpleNamespace, tmp_path: Path, name: str
) -> None:
    given = set(_container_env(compose, name, _sentinel_dotenv(ops.REPO)))
    reads = _variables_read_by(ops.REPO, name, tmp_path)
    assert given <= reads, f"{name} is given variables it never reads: {sorted(given - reads)}"
    # Every tuning variable is still reachable from .env (passed through when set).
    assert {"LOG_LEVEL", "RATE_LIMIT_DEFAULT", "SENTRY_DSN", "WEB_CONCURRENCY"} <= given


@pytest.mark.unit
def test_depends_on_waits_for_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "database-service": {"timescaledb", "redis"},
        "websocket-streaming": {"redis"},
        "nginx": {"database-service", "websocket-streaming"},
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
    for name in (*MONITORING, "nginx"):
        for volume in compose["services"][name].get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ops.REPO / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.unit
def test_no_literal_secret(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for key, value in _env_items(svc):
            if value is None:  # passed from .env or the shell, never written here
                continue
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.match(str(value)), f"{name}.{key} must be ${{{key}:?...}}"
            _assert_url_password_is_reference(f"{name}.{key}", str(value))


@pytest.mark.unit
def test_every_variable_is_documented_in_env_example(compose: dict[str, Any], ops: SimpleNamespace) -> None:
    example = (ops.REPO / ".env.example").read_text()
    used = {var for text in _strings(compose) for var in VAR_REF.findall(text)}
    assert {"API_KEY", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= used
    passed = {key for svc in compose["services"].values() for key, value in _env_items(svc) if value is None}
    assert {"LOG_LEVEL", "SYMBOLS"} <= passed
    for var in used | passed:
        assert re.search(rf"^#? ?{var}=", example, re.MULTILINE), f"{var} not in .env.example"


def _sentinel_dotenv(repo: Path) -> dict[str, str]:
    """A .env with every variable .env.example names set to a value that can be traced."""
    names = re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (repo / ".env.example").read_text(), re.MULTILINE)
    return {name: f"sentinel-{name.lower()}" for name in names}


def _interpolate(value: str, dotenv: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1], match[2], match[3]
        found = dotenv.get(name)
        if operator in (":-", ":?") and not found:
            found = None
        if found is None and operator in (":?", "?"):
            raise AssertionError(f"compose would stop: {name}: {argument}")
        return found if found is not None else (argument or "")

    return COMPOSE_REF.sub(one, value)


def _container_env(compose: dict[str, Any], name: str, dotenv: dict[str, str]) -> dict[str, str]:
    """The environment compose gives `name`'s container, for a project .env of `dotenv`."""
    svc = compose["services"][name]
    assert "env_file" not in svc, f"{name}: env_file passes a whole file"
    env = {}
    for key, value in _env_items(svc):
        if value is None:  # passed from the project environment when set there
            if key in dotenv:
                env[key] = dotenv[key]
        else:
            env[key] = _interpolate(str(value), dotenv)
    return env


def _variables_read_by(repo: Path, service: str, tmp_path: Path) -> set[str]:
    """Settings of `service`, its routes' RATE_LIMIT_<SCOPE>, and what its gunicorn setup reads."""
    from shared.config import SHARED_SETTINGS

    module = service.replace("-", "_")
    own = importlib.import_module(f"{module}.settings").SETTINGS
    names = {setting.name for setting in (*SHARED_SETTINGS, *own)}
    app = importlib.import_module(module).create_app(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}", "REDIS_URL": None, "SENTRY_DSN": None}
    )
    scopes = set(app.view_functions)
    scopes |= {getattr(view, "rate_limit_scope", "") for view in app.view_functions.values()}
    names |= {f"RATE_LIMIT_{scope.upper()}" for scope in scopes if scope}
    for path in (
        repo / service / "gunicorn.conf.py",
        repo / "shared/gunicorn_hooks.py",
        repo / "shared/metrics.py",
    ):
        names |= set(ENVIRON_READ.findall(path.read_text()))
    return names


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


@pytest.mark.unit
def test_redis_ha_file_points_both_services_at_the_three_sentinels(ops: SimpleNamespace) -> None:
    """docker-compose.redis-ha.yml: the services' REDIS_URL names the sentinels and the master they watch."""
    from ruamel.yaml import YAML

    from shared.redis_conn import SENTINEL_PORT, parse_sentinel_url

    ha = YAML(typ="safe").load((ops.REPO / "docker-compose.redis-ha.yml").read_text())
    sentinels = sorted(name for name in ha["services"] if name.startswith("redis-sentinel-"))
    assert len(sentinels) == 3
    assert "--replicaof redis 6379" in ha["services"]["redis-replica"]["command"][-1]
    for name in APP_PORTS:
        url = ha["services"][name]["environment"]["REDIS_URL"].replace(
            "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}", "pw"
        )
        target = parse_sentinel_url(url)
        assert target.sentinels == tuple((s, SENTINEL_PORT) for s in sentinels)
        assert target.options["password"] == "pw"
        depends = ha["services"][name]["depends_on"]
        assert {s: depends[s]["condition"] for s in sentinels} == dict.fromkeys(sentinels, "service_healthy")
        for sentinel in sentinels:
            script = ha["services"][sentinel]["command"][-1]
            assert f"sentinel monitor {target.master} redis 6379 2" in script
            assert "requirepass $$REDIS_PASSWORD" in script  # the URL's password opens the sentinels too
