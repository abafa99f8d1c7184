"""How the shared package holds together: import graph, set-up order, `/`, one symbol rule."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from shared import __version__
from shared.health_check import HealthCheck
from shared.lifecycle import ExtensionOrderError
from shared.metrics import Metrics
from shared.rate_limiter import RateLimiter
from shared.redis_cache import Cache
from shared.symbols import SYMBOL_PATTERN, is_symbol, normalise_symbol

pytestmark = pytest.mark.unit

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SHARED.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.Module, modules: set[str]) -> set[str]:
    """shared modules imported anywhere in `tree` (functions too), except under TYPE_CHECKING."""
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or ({node.module} & modules)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as a path back to its start; None when there is none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        found = next((c for t in sorted(graph.get(name, ())) if (c := visit(t, [*path, name]))), None)
        done.add(name)
        return found

    return next((c for name in sorted(graph) if (c := visit(name, []))), None)


def test_shared_modules_import_each_other_without_a_cycle() -> None:
    files = {_module_name(p): p for p in SHARED.rglob("*.py")}
    graph = {name: _imported(ast.parse(path.read_text()), set(files)) - {name} for name, path in files.items()}
    assert "shared.app" not in graph["shared.metrics"]  # metrics used to reach on_shutdown through it
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize("extension", [Cache, RateLimiter])
def test_an_extension_set_up_too_early_says_what_it_needs(extension: Callable[[Flask], object]) -> None:
    bare = Flask("bare")
    bare.config.update(SERVICE_NAME="bare", REDIS_URL=None, RATE_LIMIT_MAX_KEYS=10, REDIS_TIMEOUT_SECONDS=0.05)
    name = getattr(extension, "__name__", "")
    with pytest.raises(ExtensionOrderError, match=rf"{name} needs Metrics .*call Metrics\(app\) before"):
        extension(bare)
    Metrics(bare)
    with pytest.raises(ExtensionOrderError, match=f"{name} needs HealthCheck"):
        extension(bare)
    HealthCheck(bare)
    extension(bare)  # in order: fine


def test_index_names_the_service_and_links_what_it_has(memory_app: Flask) -> None:
    response = memory_app.test_client().get("/")
    assert response.status_code == 200
    body = response.get_json()
    # the support app has no /openapi.json: no link to a 404
    routes = body.pop("routes")
    assert body == {
        "service": "support-app",
        "version": __version__,
        "links": {"health": "/health", "metrics": "/metrics"},  # no document, so no /docs link
    }
    assert {"GET /", "GET /health", "GET /metrics"} <= set(routes)
    client = memory_app.test_client()
    for path in body["links"].values():
        assert client.get(path).status_code == 200


def test_redis_fallback_total_is_declared_once_with_its_help(make_app: Callable[..., Flask]) -> None:
    # both the cache and the limiter count fallbacks; whichever registers first, the help is real
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    app.test_client().get("/limited")
    text = app.test_client().get("/metrics").get_data(as_text=True)
    helps = [line for line in text.splitlines() if line.startswith("# HELP sardag_redis_fallback_total")]
    assert helps == [
        "# HELP sardag_redis_fallback_total Calls served in-process because Redis was unreachable, by component"
    ]


@pytest.mark.parametrize("good", ["BTCUSDT", "btcusdt", "AB", "A" * 20, "1000SATSUSDT"])
def test_symbol_rule_accepts(good: str) -> None:
    assert is_symbol(good)
    assert normalise_symbol(good) == good.upper()


@pytest.mark.parametrize("bad", ["B", "A" * 21, "BTC-USDT", "BTC USDT", "BTCÜSDT", "BTCUSDT\n", "", 7, None])
def test_symbol_rule_refuses(bad: object) -> None:
    assert not is_symbol(bad)
    with pytest.raises(ValueError, match="must be 2-20 letters or digits"):
        normalise_symbol(bad)


def test_symbol_pattern_is_json_schema_syntax() -> None:
    assert SYMBOL_PATTERN == "^[A-Za-z0-9]{2,20}$"
