"""REDIS_URL in the Sentinel form: what is read from it, what redis-py is given, what is shown."""

from __future__ import annotations

import pytest
import redis
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from shared.config import redacted, secret_values
from shared.redis_conn import DirectConnections, redis_client
from shared.redis_url import SentinelURL, parse_redis_url, parse_sentinel_url

pytestmark = pytest.mark.unit

TLS_URL = "rediss+sentinel://app:p%40ss@s1.internal:26380,[::1],s3.internal:26379/cache/2?ssl_ca_certs=/ca.pem"


def test_the_sentinel_form_names_every_sentinel_the_master_and_the_db() -> None:
    assert parse_sentinel_url(TLS_URL) == SentinelURL(
        sentinels=(("s1.internal", 26380), ("::1", 26379), ("s3.internal", 26379)),
        master="cache",
        db=2,
        username="app",
        password="p@ss",
        tls=True,
        query="ssl_ca_certs=/ca.pem",
    )
    assert parse_sentinel_url("redis+sentinel://h:1/m") == SentinelURL((("h", 1),), "m")


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@cache:6380/1?ssl_cert_reqs=required",
        "unix:///run/redis.sock",
        "redis+sentinel://:pw@h1:26379,h2:26379/mymaster/0",
        TLS_URL,
    ],
)
def test_valid_urls_are_kept_as_written(url: str) -> None:
    assert parse_redis_url(f"  {url} ") == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://:topsecret@h1:26379,h2:26379", "no master name"),
        ("redis+sentinel://:topsecret@h1:26379/", "no master name"),
        ("redis+sentinel://:topsecret@h1:26379,,h2/m", "empty"),
        ("redis+sentinel://:topsecret@h1:99999/m", "port must be a number"),
        ("redis+sentinel://:topsecret@[::1/m", "malformed URL"),
        ("redis+sentinel://:topsecret@[::1]x/m", "port must be a number"),
        ("redis+sentinel://:topsecret@h1:26379,redis://h2:6379/m", "sentinel host"),
        ("redis+sentinel://:topsecret@h1/m/0/extra", "database number"),
        ("redis://:topsecret@h1:6379,h2:6379/0", "several hosts are sentinels"),
        ("sentinel://:topsecret@h1/m", "unknown URL scheme"),
    ],
)
def test_a_bad_url_is_one_line_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        parse_redis_url(url)
    message = str(raised.value)
    assert "topsecret" not in message
    assert "\n" not in message


def test_the_master_and_the_sentinels_get_the_password_and_tls() -> None:
    client = redis_client(TLS_URL, timeout=0.2)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "cache"
    assert pool.connection_class is SentinelManagedSSLConnection
    master = pool.connection_kwargs
    assert (master["username"], master["password"], master["db"]) == ("app", "p@ss", 2)
    assert (master["ssl_ca_certs"], master["socket_timeout"], master["socket_connect_timeout"]) == (
        "/ca.pem",
        0.2,
        0.2,
    )
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [
        ("s1.internal", 26380),
        ("::1", 26379),
        ("s3.internal", 26379),
    ]
    for sentinel in sentinels:
        given = sentinel.connection_pool.connection_kwargs
        assert issubclass(sentinel.connection_pool.connection_class, redis.SSLConnection)
        assert (given["username"], given["password"], given["db"]) == ("app", "p@ss", 0)
        assert (given["ssl_ca_certs"], given["socket_timeout"]) == ("/ca.pem", 0.2)


def test_without_tls_the_connections_are_plain_and_direct_calls_ask_the_sentinels() -> None:
    client = redis_client("redis+sentinel://:pw@127.0.0.1:1/mymaster")
    assert client.connection_pool.connection_class is SentinelManagedConnection
    asked = r"no sentinel names a master 'mymaster' \(asked 127.0.0.1:1\)"
    with pytest.raises(redis.ConnectionError, match=asked):
        client.ping()
    # the rate limiter's own connections ask them too (never a default localhost:6379)
    with pytest.raises(redis.ConnectionError, match=asked):
        DirectConnections(client).call(b"*1\r\n$4\r\nPING\r\n")


def test_the_password_is_masked_where_the_config_is_shown() -> None:
    config = {"REDIS_URL": "redis+sentinel://:topsecret@h1:26379,h2:26379/mymaster/0"}
    assert redacted(config)["REDIS_URL"] == "redis+sentinel://:***@h1:26379,h2:26379/mymaster/0"
    assert "topsecret" in secret_values(config)
