"""Fixtures for the operations tests: tool lookup, free ports, services under gunicorn, nginx."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
from sardag_testing import free_port, in_ci, wait_until
from sardag_testing.processes import REPO, SERVICES, VENV_BIN, Launcher, answers, http, service_env

INSTALL_HINT = "run scripts/install-tools.sh (as root) to install it"
NGINX_TEMPLATES = REPO / "deploy/nginx/templates"
TEMPLATE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Only what a test run needs around the shipped http-level files (the nginx image's own
# nginx.conf plays this part under compose): its own pid, logs and temp paths.
NGINX_MAIN_CONF = """{user}worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log notice;
daemon off;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    include conf.d/*.conf;
}}
"""


def missing(reason: str) -> None:
    """Skip with `reason`, or fail under CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def find_tool(name: str, *extra: Path) -> str:
    """Path of an executable on PATH, next to this Python, or in `extra`; else skip/fail."""
    candidates = [shutil.which(name), VENV_BIN / name, *extra]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    missing(f"{name} not found; {INSTALL_HINT}")
    raise AssertionError("unreachable")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def require_service_code() -> None:
    """Skip (fail under CI) while a service package or its gunicorn.conf.py is not there."""
    for service, spec in SERVICES.items():
        for path in (REPO / service / "gunicorn.conf.py", REPO / service / spec["module"] / "__init__.py"):
            if not path.exists():
                missing(f"{path.relative_to(REPO)} does not exist yet")


def render_template(text: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """envsubst for `${NAME}`; a line with a list-valued name is repeated once per value."""
    lines = []
    for line in text.splitlines():
        names = TEMPLATE_VARIABLE.findall(line)
        unknown = sorted(set(names) - set(values))
        assert not unknown, f"no value for {unknown} in: {line.strip()}"
        repeated = {name for name in names if not isinstance(values[name], str)}
        assert len(repeated) <= 1, f"more than one list-valued variable in: {line.strip()}"
        choices = list(values[min(repeated)]) if repeated else [""]
        lines += [_fill(line, values, choice) for choice in choices]
    return "\n".join(lines) + "\n"


def _fill(line: str, values: Mapping[str, str | Sequence[str]], choice: str) -> str:
    def value(match: re.Match[str]) -> str:
        found = values[match[1]]
        return found if isinstance(found, str) else choice

    return TEMPLATE_VARIABLE.sub(value, line)


def render_nginx(root: Path, values: Mapping[str, str | Sequence[str]]) -> Path:
    """Render deploy/nginx/templates into `root`/conf.d under a test main file; returns it."""
    (root / "conf.d").mkdir(parents=True, exist_ok=True)
    (root / "temp").mkdir(exist_ok=True)
    for template in sorted(NGINX_TEMPLATES.glob("*.template")):
        (root / "conf.d" / template.name.removesuffix(".template")).write_text(
            render_template(template.read_text(), values)
        )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the test's tmp dirs
    conf = root / "nginx.conf"
    conf.write_text(NGINX_MAIN_CONF.format(user=user, root=root))
    return conf


def nginx_argv(conf: Path, *extra: str) -> list[str]:
    """Debian's nginx on `conf`, prefix and early error log in its folder."""
    binary = find_tool("nginx", Path("/usr/sbin/nginx"))
    return [binary, "-p", f"{conf.parent}/", "-c", str(conf), "-e", str(conf.parent / "error.log"), *extra]


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    require_service_code()
    started = Launcher(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def ops() -> SimpleNamespace:
    """The helpers above, for test modules (importlib import mode: no conftest imports)."""
    return SimpleNamespace(
        REPO=REPO,
        SERVICES=SERVICES,
        answers=answers,
        base_env=service_env,
        dockerfile_instructions=dockerfile_instructions,
        find_tool=find_tool,
        free_port=free_port,
        http=http,
        in_ci=in_ci,
        missing=missing,
        nginx_argv=nginx_argv,
        render_nginx=render_nginx,
        render_template=render_template,
        require_service_code=require_service_code,
        wait_until=wait_until,
    )
