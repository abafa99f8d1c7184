"""deploy/nginx: the shipped templates render to a configuration Debian's nginx accepts (`nginx -t`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

TEMPLATES = "deploy/nginx/templates"


def loopback_values(tmp_path: Path, ports: list[int]) -> dict[str, str | list[str]]:
    """The template variables for two loopback instances of each service."""
    return {
        "SARDAG_DATABASE_SERVICE_LISTEN": f"127.0.0.1:{ports[0]}",
        "SARDAG_WEBSOCKET_STREAMING_LISTEN": f"127.0.0.1:{ports[1]}",
        "SARDAG_DATABASE_SERVICE_UPSTREAM": [f"127.0.0.1:{ports[2]}", f"127.0.0.1:{ports[3]}"],
        "SARDAG_WEBSOCKET_STREAMING_UPSTREAM": [f"127.0.0.1:{ports[4]}", f"127.0.0.1:{ports[5]}"],
        "SARDAG_ACCESS_LOG": str(tmp_path / "access.log"),
        "SARDAG_TRACE_SAMPLE_PERCENT": "10",
    }


@pytest.mark.integration
def test_nginx_t_accepts_the_rendered_configuration(ops: SimpleNamespace, tmp_path: Path) -> None:
    conf = ops.render_nginx(tmp_path, loopback_values(tmp_path, [ops.free_port() for _ in range(6)]))
    result = subprocess.run(ops.nginx_argv(conf, "-t"), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    rendered = (tmp_path / "conf.d/sardag.conf").read_text()
    assert len(re.findall(r"^\s*server 127\.0\.0\.1:\d+ max_fails=", rendered, re.MULTILINE)) == 4


@pytest.mark.integration
def test_nginx_t_rejects_a_broken_configuration(ops: SimpleNamespace, tmp_path: Path) -> None:
    """The check above can fail: the same run on a configuration with a typo does."""
    conf = ops.render_nginx(tmp_path, loopback_values(tmp_path, [ops.free_port() for _ in range(6)]))
    rendered = tmp_path / "conf.d/sardag.conf"
    rendered.write_text(rendered.read_text().replace("proxy_read_timeout 30s;", "proxy_read_timeout;"))
    result = subprocess.run(ops.nginx_argv(conf, "-t"), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "proxy_read_timeout" in result.stderr


@pytest.mark.unit
def test_templates_use_only_sardag_variables(ops: SimpleNamespace) -> None:
    """envsubst in the nginx image must never touch one of nginx's own $variables."""
    for path in (ops.REPO / TEMPLATES).glob("*.template"):
        text = path.read_text()
        names = re.findall(r"\$\{(\w+)\}", text)
        assert [name for name in names if not name.startswith("SARDAG_")] == [], path.name
        assert not re.search(r"\$SARDAG_", text), f"{path.name}: write ${{SARDAG_...}} with braces"
