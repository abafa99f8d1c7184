"""rediss:// and PostgreSQL sslmode (and every other query parameter) reach the clients untouched."""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
import pytest
import redis
from database_service.settings import SERVICE, SETTINGS
from database_service.storage import open_storage

from shared.config import load_config
from shared.redis_conn import redis_client
from shared.secrets import redacted

pytestmark = pytest.mark.unit

REDIS_URL = "rediss://:r3dis-pw@cache.internal:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem"
PG_QUERY = (
    "sslmode=verify-full&sslrootcert=/etc/ssl/root.crt&application_name=sardag&target_session_attrs=read-write"
)
DATABASE_URL = f"postgresql://app:pg-pw@db.internal:5432/sardag?{PG_QUERY}"


def _config() -> dict[str, Any]:
    environ = {"REDIS_URL": REDIS_URL, "DATABASE_URL": DATABASE_URL}
    return load_config(SERVICE, settings=SETTINGS, environ=environ, env_file=None)


def test_the_parsed_settings_are_the_urls_as_given() -> None:
    config = _config()
    assert config["REDIS_URL"] == REDIS_URL
    assert config["DATABASE_URL"] == DATABASE_URL
    shown = redacted(config)  # what `python -m shared.config` prints: only the passwords change
    assert shown["DATABASE_URL"] == DATABASE_URL.replace("pg-pw", "***")
    assert shown["REDIS_URL"] == REDIS_URL.replace("r3dis-pw", "***")


def test_redis_gets_tls_and_its_options() -> None:
    client = redis_client(_config()["REDIS_URL"])
    pool = client.connection_pool
    assert issubclass(pool.connection_class, redis.SSLConnection)
    given = pool.connection_kwargs
    assert (given["host"], given["port"], given["db"], given["password"]) == (
        "cache.internal",
        6380,
        2,
        "r3dis-pw",
    )
    assert (given["ssl_cert_reqs"], given["ssl_ca_certs"]) == ("required", "/etc/ssl/ca.pem")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_postgresql_gets_sslmode_and_every_other_parameter(scheme: str) -> None:
    storage = open_storage(DATABASE_URL.replace("postgresql", scheme, 1))
    # what every pooled connection is opened with (libpq keywords), without connecting
    options = psycopg2.extensions.parse_dsn(psycopg2.extensions.make_dsn(**storage.params))  # type: ignore[attr-defined]
    assert options["sslmode"] == "verify-full"
    assert options["sslrootcert"] == "/etc/ssl/root.crt"
    assert options["application_name"] == "sardag"
    assert options["target_session_attrs"] == "read-write"
    assert (options["user"], options["password"], options["host"]) == ("app", "pg-pw", "db.internal")
