"""/readyz with DATABASE_READ_URL: the pod stays ready on the standbys while the primary is away."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

pytestmark = [pytest.mark.integration, pytest.mark.api, pytest.mark.database]

NOWHERE = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1: refused at once


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


@pytest.mark.parametrize("database_url", [NOWHERE])
def test_readyz_is_503_without_standbys_while_the_primary_is_unreachable(
    make_app: Callable[..., Flask],
) -> None:
    ready = make_app().test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"]["status"] == "down"
