"""`python -m shared.rate_limiter`: Redis is checked only when a URL is given, and it says which."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from sardag_testing import free_port

from shared.rate_limiter import __main__ as self_check


@pytest.mark.unit
def test_in_process_checks_are_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    self_check.main([])
    out = capsys.readouterr().out
    assert "memory: 55 hits on a 50/min key -> 50 allowed, 5 rejected: ok" in out
    assert "window slides by exactly one request: ok" in out
    assert "1,000 kept (LRU): ok" in out


@pytest.mark.unit
def test_without_a_url_redis_is_never_contacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)

    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a Redis client was created for {args}")

    monkeypatch.setattr(self_check, "redis_client", no_client)
    self_check.main([])
    assert "redis: not checked (no URL" in capsys.readouterr().out


@pytest.mark.unit
def test_unreachable_url_from_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    self_check.main([])
    out = capsys.readouterr().out
    assert "(redis://:***@127.0.0.1:" in out
    assert "from REDIS_URL): skipped, not reachable" in out
    assert "hunter2" not in out


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.slow
def test_url_argument_is_checked_and_its_key_removed(clean_redis: str) -> None:
    env_without_url = {"PATH": "/usr/bin:/bin", "REDIS_URL": ""}
    done = subprocess.run(
        [sys.executable, "-m", "shared.rate_limiter", clean_redis],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_without_url,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "redis: 55 hits on a 50/min key -> 50 allowed, 5 rejected: ok" in done.stdout
    assert f"redis: checked {clean_redis} (from the command line)" in done.stdout
    assert redis.Redis.from_url(clean_redis).dbsize() == 0
