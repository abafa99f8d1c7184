"""Kubernetes probes: /livez answers while the database is down, /readyz follows the database."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

pytestmark = [pytest.mark.api, pytest.mark.database]

NOWHERE = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1: refused at once


@pytest.mark.unit
@pytest.mark.parametrize("database_url", [NOWHERE])
def test_livez_stays_200_and_readyz_is_503_with_postgres_and_redis_down(make_app: Callable[..., Flask]) -> None:
    client = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    assert client.get("/health").status_code == 503
    live = client.get("/livez")
    assert live.status_code == 200
    assert live.get_json()["status"] == "alive"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["Retry-After"]
    body = ready.get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"]["status"] == "down"


def test_readyz_is_200_when_storage_answers(make_app: Callable[..., Flask], backend: str) -> None:
    ready = make_app().test_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": {"status": "ok", "detail": backend}}


@pytest.mark.unit
@pytest.mark.parametrize("database_url", [NOWHERE])
def test_probes_are_never_rate_limited(make_app: Callable[..., Flask]) -> None:
    client = make_app(RATE_LIMIT_DEFAULT=2).test_client()
    statuses = {path: {client.get(path).status_code for _ in range(5)} for path in ("/livez", "/readyz")}
    assert statuses == {"/livez": {200}, "/readyz": {503}}
    assert "X-RateLimit-Limit" not in client.get("/livez").headers
    assert {client.get("/stats").status_code for _ in range(5)} >= {429}  # the default limit applies elsewhere


@pytest.mark.unit
def test_both_probes_are_in_the_openapi_document() -> None:
    from database_service.openapi import build_openapi

    paths = build_openapi()["paths"]
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/livez"]["get"]["responses"]) == {"200"}


@pytest.mark.integration
@pytest.mark.parametrize("database_url", [NOWHERE])
def test_readyz_stays_200_on_the_standbys_while_the_primary_is_unreachable(
    make_app: Callable[..., Flask], pg_database: str
) -> None:
    # During a failover reads go on from DATABASE_READ_URL: the pod must stay in the Service.
    make_app(DATABASE_URL=pg_database)  # the standby's schema, as replication would give it
    client = make_app(DATABASE_READ_URL=pg_database).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    detail = ready.get_json()["checks"]["database"]["detail"]
    assert detail.startswith("reads only: the primary is unreachable")
    assert client.get("/signals/history").status_code == 200
    write = client.post("/signals/save", json={"symbol": "BTCUSDT", "action": "BUY", "price": 1})
    assert write.status_code == 503
