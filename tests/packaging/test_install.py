"""What a user installs: the wheel, `make run`'s runtime, and each image's requirements.txt.

Each test installs into a fresh venv from the package index (pip's cache keeps repeat runs
short) and starts the services from there, away from the source tree. The wheel carries the
services and `shared` only: every module in it imports with the runtime extras alone (the
tests' support code and the fake exchange stay in the checkout).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sardag_testing import require_server
from sardag_testing.processes import REPO, SERVICES, Launcher, http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "dist", "data", "*.egg-info", "__pycache__", ".*_cache"
)
OTHER_SERVICE_MODULES = {"database-service": "websocket", "websocket-streaming": "psycopg2"}
# What the images install besides the base dependencies (scripts/lock.py): no test, bench
# or fake-exchange extra.
RUNTIME_EXTRAS = "database-service,websocket-streaming,tracing"
SHIPPED_PACKAGES = {"shared", "database_service", "websocket_streaming"}
# Imports each module named on its command line; prints {module: error} for those that fail.
IMPORT_EACH = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def _run(argv: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _venv(path: Path) -> Path:
    """A fresh venv without pip of its own: this environment's (newer, faster) pip installs into it."""
    _run([sys.executable, "-m", "venv", "--without-pip", path], path.parent)
    return path / "bin"


def _pip_install(bin_dir: Path, *args: str | Path) -> None:
    """pip install from the package index; skip (fail under CI) when it cannot be reached."""
    pip = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(bin_dir / "python"),
        "install",
        "--quiet",
        "--no-compile",
    ]
    done = subprocess.run(
        [*pip, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 and (
        "No matching distribution" in done.stderr or "connection" in done.stderr.lower()
    ):
        require_server("the package index", done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tree (no stale build/ of the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=NOT_SHIPPED)
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            root / "dist",
            source,
        ],
        root,
    )
    warnings = [line for line in (built.stdout + built.stderr).splitlines() if "warning" in line.lower()]
    assert warnings == [], "the project's packaging warns:\n" + "\n".join(warnings)
    (found,) = (root / "dist").glob("sardag_services-*.whl")
    return found


def _wheel_modules(wheel: Path) -> list[str]:
    """Every module the wheel contains, dotted (`pkg/__init__.py` is `pkg`)."""
    with zipfile.ZipFile(wheel) as archive:
        files = [n for n in archive.namelist() if n.endswith(".py") and ".dist-info/" not in n]
    names = [f.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in files]
    return sorted(names)


def _import_failures(bin_dir: Path, modules: list[str], cwd: Path) -> dict[str, str]:
    """The modules that fail to import in the venv of `bin_dir`, with their error."""
    done = _run([bin_dir / "python", "-c", IMPORT_EACH, *modules], cwd)
    failed: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return failed


def _imports(bin_dir: Path, module: str, cwd: Path, env: dict[str, str] | None = None) -> bool:
    """True when `import module` succeeds in the venv of `bin_dir`."""
    argv = [bin_dir / "python", "-c", f"import {module}"]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False).returncode == 0


def _imported_from(bin_dir: Path, module: str, cwd: Path) -> str:
    code = f"import {module}; print({module}.__file__)"
    return _run([bin_dir / "python", "-c", code], cwd).stdout.strip()


def _shipped_migrations(bin_dir: Path, cwd: Path) -> list[str]:
    code = (
        "from importlib.resources import files; "
        "print(*sorted(p.name for d in ('sqlite', 'postgres') "
        "for p in (files('database_service') / 'migrations' / d).iterdir()))"
    )
    return _run([bin_dir / "python", "-c", code], cwd).stdout.split()


def test_the_wheel_installs_in_a_fresh_venv_and_runs_both_services(wheel: Path, tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path / "venv")
    _pip_install(bin_dir, f"{wheel}[services]")
    away = tmp_path / "elsewhere"  # no source tree on the path: only the installed wheel
    away.mkdir()
    for module in ("shared", "database_service.storage", "websocket_streaming"):
        assert _imported_from(bin_dir, module, away).startswith(str(tmp_path / "venv")), module
    repo_sql = sorted(p.name for p in (REPO / "database-service/database_service/migrations").glob("*/*.sql"))
    assert _shipped_migrations(bin_dir, away) == repo_sql
    with Launcher(tmp_path) as launch:
        for service in SERVICES:
            conf = REPO / service / "gunicorn.conf.py"
            spec = f"{SERVICES[service]['module']}:create_app()"
            server = launch.gunicorn_app(spec, conf, 1, name=service, bin_dir=bin_dir, pythonpath=[], cwd=away)
            status, index = http("GET", f"{server.url}/")
            assert (status, index["service"]) == (200, service)
        signal = {"symbol": "BTCUSDT", "action": "BUY", "price": 1}
        db = next(r for r in launch.running if r.name.startswith("database-service"))
        assert http("POST", f"{db.url}/signals/save", signal)[0] == 201  # migrations ran from the wheel


def test_every_module_of_the_wheel_imports_with_only_the_runtime_extras(wheel: Path, tmp_path: Path) -> None:
    modules = _wheel_modules(wheel)
    assert {name.split(".")[0] for name in modules} == SHIPPED_PACKAGES
    assert len(modules) > 50
    bin_dir = _venv(tmp_path / "venv")
    _pip_install(bin_dir, f"{wheel}[{RUNTIME_EXTRAS}]")
    for tool in ("pytest", "websockets"):  # what the tests' support code and the fake exchange import
        assert not _imports(bin_dir, tool, tmp_path), f"the runtime extras install {tool}"
    away = tmp_path / "elsewhere"
    away.mkdir()
    assert _import_failures(bin_dir, modules, away) == {}


def test_make_run_installs_the_runtime_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["scripts/bootstrap.sh", "run"],
        cwd=REPO,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "VENV": str(venv),
            "HOME": str(Path.home()),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 and "connection" in done.stderr.lower():
        require_server("the package index", done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-3000:]
    bin_dir = venv / "bin"
    for module in ("database_service", "websocket_streaming"):
        _imported_from(bin_dir, module, tmp_path)
    # the fake exchange runs from the checkout (scripts/run.sh): make run installs what it imports
    bare_env = {"PATH": "/usr/bin:/bin"}
    tool_env = {**bare_env, "PYTHONPATH": str(REPO / "tools" / "fake-exchange")}
    for module in ("fake_exchange.server", "fake_exchange.drill"):
        assert _imports(bin_dir, module, tmp_path, tool_env), f"make run cannot run {module}"
    for tool in ("fake_exchange", "sardag_testing"):  # neither comes with the installed project
        assert not _imports(bin_dir, tool, tmp_path, bare_env), f"make run installed {tool}"
    for tool in ("pytest", "ruff", "mypy", "flask_limiter", "hadolint"):
        found = subprocess.run([bin_dir / "python", "-c", f"import {tool}"], capture_output=True, check=False)
        assert found.returncode != 0, f"make run installed {tool}"
        assert not (bin_dir / tool).exists()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_image_requirements_run_its_service_and_only_it(service: str, wheel: Path, tmp_path: Path) -> None:
    # what the Dockerfile installs, then the code (--no-deps: nothing else comes in)
    bin_dir = _venv(tmp_path / "venv")
    _pip_install(bin_dir, "-r", REPO / service / "requirements.txt")
    _pip_install(bin_dir, "--no-deps", wheel)
    other = OTHER_SERVICE_MODULES[service]
    absent = subprocess.run([bin_dir / "python", "-c", f"import {other}"], capture_output=True, check=False)
    assert absent.returncode != 0, f"{service}'s image would carry {other}"
    # the image copies shared/ and its own package: every module there imports with its requirements
    package = SERVICES[service]["module"]
    in_image = [m for m in _wheel_modules(wheel) if m.split(".")[0] in ("shared", package)]
    assert _import_failures(bin_dir, in_image, tmp_path) == {}
    with Launcher(tmp_path) as launch:
        conf = REPO / service / "gunicorn.conf.py"
        spec = f"{SERVICES[service]['module']}:create_app()"
        server = launch.gunicorn_app(spec, conf, 1, name=service, bin_dir=bin_dir, pythonpath=[], cwd=tmp_path)
        assert http("GET", f"{server.url}/health")[0] == 200
