"""A storage error in the log says why: wrong password, missing database and refused connection differ.

Item 4's last point. The service is started on a broken DATABASE_URL; its log must carry
the driver's reason (password masked), at start-up and when a write is answered 503.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sardag_testing import free_port
from sardag_testing.processes import Launcher, http
from sardag_testing.servers import PrivatePostgres

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.api]

PASSWORD = "right-Pa55word"
WRONG = "wr0ng-Pa55word"
SIGNAL = {"symbol": "BTCUSDT", "action": "BUY", "price": 1.5}
CASES = {
    # case: (URL builder, what the log must say)
    "wrong password": (
        lambda pg: pg.database_url("postgres", password=WRONG),
        'password authentication failed for user "postgres"',
    ),
    "missing database": (lambda pg: pg.database_url("no_such_db"), 'database "no_such_db" does not exist'),
    "refused connection": (
        lambda pg: f"postgresql://postgres:{WRONG}@127.0.0.1:{free_port()}/postgres",
        "Connection refused",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_log_says_why_the_database_failed(
    case: str, launcher: Launcher, private_postgres: Callable[..., PrivatePostgres]
) -> None:
    pg = private_postgres(password=PASSWORD)
    make_url, reason = CASES[case]
    server = launcher.gunicorn("database-service", workers=1, wait=False, DATABASE_URL=make_url(pg))
    launcher.wait_healthy(server, statuses=(503,))
    status, body = http("POST", f"{server.url}/signals/save", SIGNAL)
    assert status == 503, body
    assert body == {"error": "unavailable", "message": "The database is unavailable; retry shortly."}
    server.stop()
    lines = server.log_messages()
    for context in ("migrations not applied at start-up", "database unavailable, answering 503"):
        said = [line for line in lines if context in line]
        assert said, f"no {context!r} line:\n{server.log_tail()}"
        assert reason in said[0], said[0]
        print(f"{case}: {said[0]}")
    for secret in (PASSWORD, WRONG):
        assert secret not in server.log_text()
    others = {r for c, (_, r) in CASES.items() if c != case}
    assert not [line for line in lines for other in others if other in line]


def test_multi_host_urls_keep_their_password_out_of_log_and_health(
    launcher: Launcher, private_postgres: Callable[..., PrivatePostgres]
) -> None:
    pg = private_postgres(password=PASSWORD)
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{pg.port}"
    server = launcher.gunicorn(
        "database-service",
        workers=1,
        wait=False,
        DATABASE_URL=f"postgresql://postgres:{WRONG}@{hosts}/postgres?target_session_attrs=read-write",
        DATABASE_READ_URL=f"postgresql://postgres:{WRONG}@{hosts}/postgres?target_session_attrs=prefer-standby",
    )
    launcher.wait_healthy(server, statuses=(503,))
    health_status, health = http("GET", f"{server.url}/health")
    status, _ = http("GET", f"{server.url}/signals/history")
    server.stop()
    print(f"multi-host: /health {health_status} {health}")
    assert (health_status, status) == (503, 503)
    assert health["checks"]["database"]["status"] == "down"
    assert health["checks"]["database_read"]["status"] == "down"
    said = [line for line in server.log_messages() if "database unavailable, answering 503" in line]
    assert said, server.log_tail()
    # libpq tried both hosts: the refused one and the one that refused the password
    assert "Connection refused" in said[0]
    assert 'password authentication failed for user "postgres"' in said[0]
    assert WRONG not in server.log_text()
    assert WRONG not in str(health)
