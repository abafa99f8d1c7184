"""/livez and /readyz against a private PostgreSQL and Redis that the test stops and restarts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from database_service import create_app
from sardag_testing import wait_until
from sardag_testing.servers import PrivatePostgres, PrivateRedis

from shared.lifecycle import shutdown

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.redis]


@pytest.fixture
def servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    """A PostgreSQL and a redis-server of this test's own."""
    with PrivatePostgres() as pg, PrivateRedis() as rd:
        yield pg, rd


def test_alive_but_not_ready_while_postgres_and_redis_are_down(
    servers: tuple[PrivatePostgres, PrivateRedis],
) -> None:
    pg, rd = servers
    app = create_app({"TESTING": True, "DATABASE_URL": pg.url, "REDIS_URL": rd.url, "LOG_FORMAT": "text"})
    client = app.test_client()
    try:
        assert client.get("/readyz").status_code == 200
        assert client.get("/readyz").get_json()["checks"]["database"] == {
            "status": "ok",
            "detail": "postgresql",
        }
        pg.stop("immediate")
        rd.stop()
        live = client.get("/livez")
        assert (live.status_code, live.get_json()) == (200, {"status": "alive", "service": "database-service"})
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"]["database"]["status"] == "down"
        assert client.get("/health").status_code == 503
        assert {client.get("/livez").status_code for _ in range(10)} == {200}
        pg.start()
        wait_until(
            lambda: client.get("/readyz").status_code == 200, what="ready again after PostgreSQL returns"
        )
    finally:
        shutdown(app)
