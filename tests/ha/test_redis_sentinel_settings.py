"""`REDIS_URL` in the Sentinel form: parsed, refused with one line when wrong, password masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.connection import SSLConnection
from redis.sentinel import SentinelManagedSSLConnection

from shared.config import ConfigError, load_config
from shared.redis_conn import redis_client
from shared.secrets import redacted, secret_values

PASSWORD = "s3ntinel-pw"
ROOT = Path(__file__).resolve().parents[2]

MALFORMED = {
    "no master name": f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,10.0.0.2:26379",
    "bad port": f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,10.0.0.2:2637x/mymaster",
    "empty host": f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,,10.0.0.2/mymaster",
    "path too long": f"redis+sentinel://:{PASSWORD}@10.0.0.1/mymaster/0/extra",
    "db not a number": f"redis+sentinel://:{PASSWORD}@10.0.0.1/mymaster/zero",
    "plain URL with several hosts": f"redis://:{PASSWORD}@10.0.0.1:6379,10.0.0.2:6379/0",
    "unknown scheme": f"redis-sentinel://:{PASSWORD}@10.0.0.1:26379/mymaster",
}


@pytest.mark.unit
@pytest.mark.parametrize("problem", sorted(MALFORMED))
def test_malformed_sentinel_urls_are_one_config_error_without_the_password(problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config("svc", environ={"REDIS_URL": MALFORMED[problem]}, env_file=None)
    assert refused.value.name == "REDIS_URL"
    assert "\n" not in str(refused.value)
    assert PASSWORD not in str(refused.value)


@pytest.mark.integration
@pytest.mark.slow
def test_config_command_refuses_a_malformed_sentinel_url_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_URL": MALFORMED["no master name"], "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "shared.config", "database-service"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("configuration error: REDIS_URL: ")
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr + done.stdout


@pytest.mark.unit
def test_a_sentinel_url_is_masked_when_printed_and_in_logs() -> None:
    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/mymaster/3"
    config = load_config("svc", environ={"REDIS_URL": url}, env_file=None)  # no sentinel answers: accepted
    assert redacted(config)["REDIS_URL"] == "redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/mymaster/3"
    assert PASSWORD in secret_values(config)


@pytest.mark.unit
def test_password_and_tls_apply_to_the_sentinels_and_the_master() -> None:
    query = "ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem"
    client = redis_client(f"rediss+sentinel://:{PASSWORD}@s1:26379,s2:26380/mymaster/2?{query}", timeout=0.3)
    pool = client.connection_pool
    master = pool.connection_kwargs
    assert pool.connection_class is SentinelManagedSSLConnection
    assert (master["password"], master["db"], master["ssl_ca_certs"]) == (PASSWORD, 2, "/etc/ssl/ca.pem")
    assert master["socket_timeout"] == 0.3
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [
        ("s1", 26379),
        ("s2", 26380),
    ]
    for sentinel in sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        assert sentinel.connection_pool.connection_class is SSLConnection
        assert (kwargs["password"], kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"]) == (
            PASSWORD,
            "required",
            "/etc/ssl/ca.pem",
        )
        assert (kwargs["socket_timeout"], kwargs["db"]) == (0.3, 0)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.redis
def test_an_unknown_master_or_a_plain_server_among_the_sentinels_is_a_config_error() -> None:
    from sardag_testing.sentinel import MASTER_NAME, SentinelStack

    with SentinelStack(password=PASSWORD) as stack:
        assert load_config("svc", environ={"REDIS_URL": stack.url}, env_file=None)["REDIS_URL"] == stack.url
        unknown = stack.url.replace(f"/{MASTER_NAME}/", "/no-such-master/")
        plain = stack.url.replace(f"@127.0.0.1:{stack.sentinel_ports[0]}", f"@127.0.0.1:{stack.master.port}")
        for url, problem in (
            (unknown, "does not know a master named 'no-such-master'"),
            (plain, "not a sentinel"),
        ):
            with pytest.raises(ConfigError) as refused:
                load_config("svc", environ={"REDIS_URL": url}, env_file=None)
            assert refused.value.name == "REDIS_URL"
            assert problem in refused.value.problem
            assert PASSWORD not in str(refused.value)


@pytest.mark.unit
def test_no_master_found_is_logged_in_one_short_line() -> None:
    from redis.sentinel import MasterNotFoundError

    from shared.redis_conn import describe

    client = redis_client(f"redis+sentinel://:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/mymaster", timeout=0.2)
    with pytest.raises(MasterNotFoundError) as failed:
        client.ping()
    assert len(str(failed.value)) > 500  # redis-py's own message: every sentinel client's repr
    assert describe(failed.value) == "No master found for 'mymaster' (2 sentinels unreachable)"
