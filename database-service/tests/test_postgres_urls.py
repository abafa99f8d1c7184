"""Multi-host PostgreSQL URLs and the connection timeouts: what is accepted, refused, masked."""

from __future__ import annotations

from pathlib import Path

import psycopg2.extensions
import pytest
from database_service.settings import check_postgres_url
from database_service.storage.pg_pool import Timeouts, connect_params

from shared.config import main
from shared.secrets import mask_url_secrets as masked

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-pw"
GOOD = [
    f"postgresql://app:{SECRET}@db1:5432,db2:5432/sardag?target_session_attrs=read-write",
    f"postgres://app:{SECRET}@10.0.0.1,10.0.0.2:6432/sardag",
    f"postgresql://app:{SECRET}@[::1]:5432,[fd00::2]:5432/sardag?target_session_attrs=prefer-standby",
    f"postgresql://app:{SECRET}@db.internal/sardag?sslmode=verify-full",
]
BAD = [
    (f"postgresql://app:{SECRET}@db1:5432,/sardag", "empty host"),
    (f"postgresql://app:{SECRET}@db1:5432,db2:99999/sardag", "no valid port"),
    (f"postgresql://app:{SECRET}@db1:5432,db2:54x2/sardag", "is not host[:port]"),
    (f"postgresql://app:{SECRET}@db1,db2/sardag?target_session_attrs=master", "target_session_attrs must be"),
    (f"postgresql://app:{SECRET}@db1,db2/sardag?target_sesion_attrs=any", "libpq cannot read it"),
    (f"postgresql://app:{SECRET}@[::1:5432,db2/sardag", "Invalid IPv6 URL"),
]


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str
) -> tuple[int, str, str]:
    """`python -m shared.config database-service` with `env` (and no .env file)."""
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    for name in ("DATABASE_URL", "DATABASE_READ_URL", "DATABASE_TIMEOUT", "DATABASE_STATEMENT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        main(["database-service"])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("url", GOOD)
def test_multi_host_urls_are_accepted_and_printed_masked(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(monkeypatch, capsys, DATABASE_URL=url, DATABASE_READ_URL=url)
    assert (code, err) == (0, "")
    assert SECRET not in out
    assert f"DATABASE_URL={url.replace(SECRET, '***')}" in out.splitlines()
    assert f"DATABASE_READ_URL={url.replace(SECRET, '***')}" in out.splitlines()


@pytest.mark.parametrize("name", ["DATABASE_URL", "DATABASE_READ_URL"])
@pytest.mark.parametrize(("url", "problem"), BAD)
def test_a_malformed_multi_host_url_stops_with_one_line_naming_it(
    name: str, url: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {name: url} if name == "DATABASE_URL" else {name: url, "DATABASE_URL": GOOD[0]}
    code, _, err = _run(monkeypatch, capsys, **env)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"configuration error: {name}: ")
    assert problem in line
    assert SECRET not in err


def test_a_read_url_needs_postgresql_and_the_client_must_outwait_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(monkeypatch, capsys, DATABASE_URL="sqlite:///x.db", DATABASE_READ_URL=GOOD[0])
    assert code == 2
    assert err.startswith("configuration error: DATABASE_READ_URL: needs a postgresql://")
    code, _, err = _run(
        monkeypatch, capsys, DATABASE_URL=GOOD[0], DATABASE_TIMEOUT="5", DATABASE_STATEMENT_TIMEOUT="5"
    )
    assert code == 2
    assert err.startswith(
        "configuration error: DATABASE_TIMEOUT: must be longer than DATABASE_STATEMENT_TIMEOUT"
    )


def test_every_connection_gets_the_timeouts_and_the_url_wins() -> None:
    timeouts = Timeouts(connect=4, statement=2.5, lock=1.5, request=6, keepalives_idle=7)
    params = connect_params(GOOD[0], timeouts)
    assert (params["host"], params["port"]) == ("db1,db2", "5432,5432")
    assert params["connect_timeout"] == "4"
    assert (params["keepalives"], params["keepalives_idle"]) == ("1", "7")
    assert params["tcp_user_timeout"] == "6000"
    assert params["options"] == "-c statement_timeout=2500 -c lock_timeout=1500"
    own = connect_params(f"{GOOD[0]}&connect_timeout=9&options=-c%20statement_timeout%3D0", timeouts)
    assert own["connect_timeout"] == "9"
    # libpq applies -c options in order: the URL's statement_timeout comes last and wins
    assert own["options"].endswith("-c statement_timeout=0")
    parsed = psycopg2.extensions.parse_dsn(psycopg2.extensions.make_dsn(**params))
    assert parsed["target_session_attrs"] == "read-write"


def test_a_multi_host_password_is_masked_in_driver_messages() -> None:
    url = GOOD[0].replace(SECRET, "p%40ss:w0rd")
    message = 'connection to server at "db1" failed: password "p@ss:w0rd" (p%40ss:w0rd) refused'
    assert "w0rd" not in masked(message, url)
    check_postgres_url(url)  # percent-encoded passwords are fine


def test_the_log_masks_a_multi_host_read_url_password() -> None:
    from shared.secrets import Secrets, secret_values

    config = {"DATABASE_URL": "sqlite:///x.db", "DATABASE_READ_URL": GOOD[0], "API_KEYS": ()}
    line = Secrets(secret_values(config)).mask(f"reads from {GOOD[0]} failed")
    assert SECRET not in line
    assert "app:***@db1:5432,db2:5432" in line


def test_the_watchdog_shuts_a_socket_still_busy_at_its_deadline_and_spares_one_returned() -> None:
    import socket
    import time
    from types import SimpleNamespace
    from typing import Any, cast

    from database_service.storage.pg_pool import Lease, Pooled, Watchdog

    watchdog = Watchdog()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        leases = [
            Lease(Pooled(cast(Any, SimpleNamespace(fileno=ours.fileno)), 0.0), time.monotonic() + 0.2)
            for ours, _ in pairs
        ]
        for lease in leases:
            watchdog.watch(lease)
        watchdog.forget(leases[1])  # its call ended in time
        pairs[0][1].settimeout(5)
        assert pairs[0][1].recv(1) == b"", "the busy connection was not cut"  # EOF: shut down
        assert leases[0].cut
        time.sleep(0.3)
        assert not leases[1].cut
        pairs[1][0].sendall(b"x")  # the returned one still works
        assert pairs[1][1].recv(1) == b"x"
    finally:
        watchdog.stop()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
