"""docker-compose's setting without docker: both services on Redis with a password, several workers.

Compose gives both services REDIS_URL=redis://:<password>@redis:6379/0, API_KEY and the
gunicorn configs' default worker counts. The same environment here (a private redis-server
with requirepass) must keep every limit exact across the workers and say so at start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sardag_testing.processes import Launcher
from sardag_testing.servers import PrivateRedis
from test_make_run_limits import SIGNAL, burst, check_exact

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.slow, pytest.mark.api]

API_KEY = "compose-like-key"


@pytest.fixture
def redis_with_password() -> Iterator[PrivateRedis]:
    """A private redis-server that requires a password, as compose's does."""
    with PrivateRedis(password="s3cret-compose") as server:
        yield server


def test_database_service_on_redis_admits_exactly_its_limits(
    tmp_path: Path, redis_with_password: PrivateRedis
) -> None:
    with Launcher(tmp_path) as launch:
        service = launch.gunicorn(
            "database-service", workers=3, REDIS_URL=redis_with_password.url, API_KEY=API_KEY, LOG_LEVEL="INFO"
        )
        key = {"X-API-Key": API_KEY}
        check_exact(burst(service.port, "POST", "/signals/save", SIGNAL, 105, key), 100, "POST /signals/save")
        check_exact(burst(service.port, "GET", "/signals/history", None, 205, key), 200, "GET /signals/history")
        assert "rate limits: on Redis, exact across 3 workers and every instance" in service.log_text()
        assert "s3cret-compose" not in service.log_text()
