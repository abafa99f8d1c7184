"""/health, /stats, /metrics, /openapi.json, API keys, rate limits and a database outage."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient

pytestmark = [pytest.mark.api, pytest.mark.database]

SIGNAL = {"symbol": "BTCUSDT", "action": "BUY", "price": 1.5}
TRADE = {"symbol": "BTCUSDT", "entry_price": 100, "exit_price": 110}


def test_index_links_docs_health_openapi_and_metrics(client: FlaskClient) -> None:
    body = client.get("/").get_json()
    assert body["service"] == "database-service"
    assert body["version"] == client.get("/openapi.json").get_json()["info"]["version"]
    links = {"docs": "/docs", "health": "/health", "openapi": "/openapi.json", "metrics": "/metrics"}
    assert body["links"] == links
    for path in body["links"].values():
        assert client.get(path).status_code == 200


def test_health_reports_database(client: FlaskClient, backend: str) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"] == {"status": "ok", "detail": backend}


def test_stats_counts_and_backend(client: FlaskClient, backend: str) -> None:
    client.post("/signals/save", json=[SIGNAL, SIGNAL])
    client.post("/performance/track", json=TRADE)
    body = client.get("/stats").get_json()
    assert body["backend"] == backend
    assert (body["signals"], body["trades"]) == (2, 1)
    assert body["migrations"][0] == "0001_initial"
    assert body["service"] == "database-service"


def test_metrics_count_saved_signals_and_trades(client: FlaskClient) -> None:
    client.post("/signals/save", json=[SIGNAL, SIGNAL, SIGNAL])
    client.post("/performance/track", json=TRADE)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sardag_signals_saved_total{service="database-service"} 3.0' in text
    assert 'sardag_trades_tracked_total{service="database-service"} 1.0' in text
    assert 'rule="/signals/save"' in text


def _schema_of(spec: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return {**schema, "components": spec["components"]}


def test_openapi_covers_every_route(app: Flask, client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    documented = {
        (p.replace("{", "<").replace("}", ">"), m.upper()) for p, ops in spec["paths"].items() for m in ops
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<int:", "<")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented
    properties = spec["components"]["schemas"]["SignalIn"]["properties"]
    assert {"symbol", "action", "price", "confidence", "metadata", "client_id"} <= set(properties)


@pytest.mark.slow
def test_responses_match_the_openapi_schemas(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    cases = [
        (client.post("/signals/save", json=SIGNAL), "/signals/save", "post", "201"),
        (client.post("/signals/save", json=[SIGNAL]), "/signals/save", "post", "201"),
        (client.get("/signals/history"), "/signals/history", "get", "200"),
        (client.get("/signals/1"), "/signals/{signal_id}", "get", "200"),
        (client.post("/performance/track", json=TRADE), "/performance/track", "post", "201"),
        (client.get("/performance/stats"), "/performance/stats", "get", "200"),
        (client.get("/performance/stats?group_by=symbol"), "/performance/stats", "get", "200"),
        (client.get("/stats"), "/stats", "get", "200"),
        (client.get("/signals/history?limit=0"), "/signals/history", "get", "400"),
    ]
    for response, path, method, status in cases:
        assert str(response.status_code) == status
        jsonschema.validate(response.get_json(), _schema_of(spec, path, method, status))


@pytest.mark.slow
def test_openapi_rejects_what_the_api_rejects(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    schema = {**spec["components"]["schemas"]["SignalIn"], "components": spec["components"]}
    jsonschema.validate(SIGNAL, schema)
    for bad in ({**SIGNAL, "price": 0}, {**SIGNAL, "confidence": 2}, {**SIGNAL, "extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_writes_need_the_api_key_when_set(make_app: Callable[..., Flask], backend: str) -> None:
    client = make_app(API_KEY="s3cret-key-0123456789").test_client()
    assert client.post("/signals/save", json=SIGNAL).status_code == 401
    wrong = client.post("/performance/track", json=TRADE, headers={"X-API-Key": "nope"})
    assert (wrong.status_code, wrong.get_json()["error"]) == (401, "unauthorized")
    assert client.get("/stats").get_json()["signals"] == 0
    ok = client.post("/signals/save", json=SIGNAL, headers={"X-API-Key": "s3cret-key-0123456789"})
    assert ok.status_code == 201
    bearer_key = {"Authorization": "Bearer s3cret-key-0123456789"}
    bearer = client.post("/performance/track", json=TRADE, headers=bearer_key)
    assert bearer.status_code == 201
    assert client.get("/signals/history").status_code == 200  # reads stay open


@pytest.mark.slow  # 101 writes
def test_save_is_limited_to_100_per_minute(client: FlaskClient) -> None:
    statuses = [client.post("/signals/save", json=SIGNAL).status_code for _ in range(101)]
    assert statuses[:100] == [201] * 100
    assert statuses[100] == 429
    limited = client.post("/signals/save", json=SIGNAL)
    assert limited.get_json()["error"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Limit"] == "100"
    assert client.get("/stats").get_json()["signals"] == 100


def test_route_limits(client: FlaskClient) -> None:
    history = client.get("/signals/history")
    track = client.post("/performance/track", json=TRADE)
    assert history.headers["X-RateLimit-Limit"] == "200"
    assert track.headers["X-RateLimit-Limit"] == "100"


@pytest.mark.unit  # nothing listens on port 1: the connection is refused at once
@pytest.mark.parametrize("database_url", ["postgresql://postgres@127.0.0.1:1/nowhere"])
def test_database_down_is_503_not_500(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["checks"]["database"]["status"] == "down"
    for response in (
        client.post("/signals/save", json=SIGNAL),
        client.get("/signals/history"),
        client.get("/performance/stats"),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"] == "unavailable"
        assert response.headers["Retry-After"]


def test_redis_down_falls_back_without_errors(make_app: Callable[..., Flask]) -> None:
    client = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    assert client.post("/performance/track", json=TRADE).status_code == 201
    assert client.get("/performance/stats").status_code == 200
    assert client.get("/performance/stats").headers["X-Cache"] == "HIT"
    # served in-process because the configured Redis is down (not because REDIS_URL was ignored)
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert health["checks"]["cache_redis"]["status"] == "degraded"
    assert health["checks"]["rate_limiter_redis"]["status"] == "degraded"
    metrics = client.get("/metrics").get_data(as_text=True)
    fallbacks = re.findall(
        r'sardag_redis_fallback_total\{component="(\w+)",service="database-service"\} (\S+)', metrics
    )
    assert {component for component, count in fallbacks if float(count) > 0} == {"cache", "rate_limiter"}


def test_index_lists_every_documented_operation(client: FlaskClient) -> None:
    routes = client.get("/").get_json()["routes"]
    paths = client.get("/openapi.json").get_json()["paths"]
    operations = sorted(f"{method.upper()} {path}" for path, item in paths.items() for method in item)
    assert sorted(routes) == operations
    assert "GET /performance/trades" in routes
