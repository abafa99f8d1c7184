"""POST /performance/track and GET /performance/stats on both backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

pytestmark = [pytest.mark.api, pytest.mark.database]


def trade(**fields: Any) -> dict[str, Any]:
    """A valid trade body, with fields overridden."""
    return {"symbol": "BTCUSDT", "entry_price": 100, "exit_price": 110, **fields}


def track_pnls(client: FlaskClient, pnls: list[float], **fields: Any) -> None:
    """Record LONG trades of quantity 1 with these pnl, exits one minute apart, in order."""
    for i, pnl in enumerate(pnls):
        body = trade(exit_price=100 + pnl, exit_time=f"2026-11-24T10:{i:02d}:00Z", **fields)
        assert client.post("/performance/track", json=body).status_code == 201


def stats(client: FlaskClient, **params: str) -> dict[str, Any]:
    response = client.get("/performance/stats", query_string=params)
    assert response.status_code == 200
    return response.get_json()


def test_track_computes_fields(client: FlaskClient) -> None:
    response = client.post(
        "/performance/track",
        json=trade(
            quantity=2,
            fees=1.5,
            strategy="breakout",
            signal_id=7,
            entry_time="2026-11-24T10:00:00Z",
            exit_time="2026-11-24T11:30:00Z",
        ),
    )
    assert response.status_code == 201
    stored = response.get_json()
    assert stored["side"] == "LONG"
    assert stored["pnl"] == 18.5
    assert stored["pnl_percent"] == pytest.approx(9.25)
    assert stored["outcome"] == "win"
    assert stored["duration_seconds"] == 5400
    assert stored["signal_id"] == 7


def test_short_trade_with_fees(client: FlaskClient) -> None:
    win = client.post("/performance/track", json=trade(side="short", exit_price=90, fees=2)).get_json()
    loss = client.post("/performance/track", json=trade(side="SHORT", quantity=3, fees=0.5)).get_json()
    fee_only = client.post("/performance/track", json=trade(exit_price=100, fees=1)).get_json()
    assert (win["side"], win["pnl"], win["outcome"]) == ("SHORT", 8.0, "win")
    assert (loss["pnl"], loss["outcome"]) == (-30.5, "loss")
    assert (fee_only["pnl"], fee_only["outcome"]) == (-1.0, "loss")
    result = stats(client)
    assert result["total_pnl"] == pytest.approx(-23.5)
    assert result["profit_factor"] == pytest.approx(8 / 31.5)


def test_worked_example(client: FlaskClient) -> None:
    track_pnls(client, [10, -5, 20, -10, 0])
    result = stats(client)
    assert result["total_trades"] == 5
    assert (result["wins"], result["losses"], result["breakeven"]) == (2, 2, 1)
    assert result["win_rate"] == 0.4
    assert result["profit_factor"] == 2.0
    assert result["expectancy"] == 3.0
    assert result["max_drawdown"] == 10
    assert result["sqn"] == pytest.approx(0.5571, abs=5e-5)
    assert (result["best_trade"], result["worst_trade"]) == (20, -10)
    assert result["total_pnl"] == 15


def test_drawdown_follows_exit_time_not_insert_order(client: FlaskClient) -> None:
    # Inserted as -10, +10; in exit order it is +10 then -10: drawdown 10 from the peak.
    client.post("/performance/track", json=trade(exit_price=90, exit_time="2026-11-24T12:00:00Z"))
    client.post("/performance/track", json=trade(exit_price=110, exit_time="2026-11-24T11:00:00Z"))
    assert stats(client)["max_drawdown"] == 10


def test_first_loss_is_a_drawdown_from_zero(client: FlaskClient) -> None:
    track_pnls(client, [-5, 3])
    assert stats(client)["max_drawdown"] == 5


def test_no_trades(client: FlaskClient) -> None:
    result = stats(client)
    assert result["total_trades"] == 0
    assert result["total_pnl"] == 0
    assert result["win_rate"] is None
    assert result["profit_factor"] is None
    assert result["sqn"] is None
    assert result["max_drawdown"] == 0


def test_only_wins(client: FlaskClient) -> None:
    track_pnls(client, [5, 10, 15])
    result = stats(client)
    assert result["win_rate"] == 1.0
    assert result["profit_factor"] is None
    assert result["average_loss"] is None
    assert result["expectancy"] == 10.0
    assert result["max_drawdown"] == 0
    assert result["sqn"] == pytest.approx(3**0.5 * 10 / 5)


def test_one_trade(client: FlaskClient) -> None:
    track_pnls(client, [-4])
    result = stats(client)
    assert result["sqn"] is None
    assert result["average_loss"] == -4
    assert result["profit_factor"] == 0.0


def test_group_by_and_filters(client: FlaskClient) -> None:
    track_pnls(client, [10, -5], strategy="a", symbol="BTCUSDT")
    track_pnls(client, [20], strategy="b", symbol="ETHUSDT")
    by_strategy = stats(client, group_by="strategy")
    assert by_strategy["group_by"] == "strategy"
    totals = {g["key"]: g["total_pnl"] for g in by_strategy["groups"]}
    assert totals == {"a": 5.0, "b": 20.0}
    by_symbol = stats(client, group_by="symbol", strategy="a")
    assert [(g["key"], g["total_trades"]) for g in by_symbol["groups"]] == [("BTCUSDT", 2)]
    assert stats(client, symbol="ethusdt")["total_pnl"] == 20
    assert stats(client, since="2026-11-24T10:01:00Z")["total_trades"] == 1
    assert stats(client, until="2026-11-24T10:01:00Z")["total_trades"] == 2


def test_drawdown_is_per_group(client: FlaskClient) -> None:
    track_pnls(client, [10, -8], strategy="a")
    track_pnls(client, [-3], strategy="b")
    groups = {g["key"]: g for g in stats(client, group_by="strategy")["groups"]}
    assert groups["a"]["max_drawdown"] == 8
    assert groups["b"]["max_drawdown"] == 3


def test_stats_cached_and_invalidated_by_new_trade(client: FlaskClient) -> None:
    track_pnls(client, [10])
    first = client.get("/performance/stats")
    again = client.get("/performance/stats")
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
    assert again.get_json() == first.get_json()
    client.post("/performance/track", json=trade(exit_price=95))
    after = client.get("/performance/stats")
    assert after.headers["X-Cache"] == "MISS"
    assert after.get_json()["total_trades"] == 2


def test_stats_cache_sees_a_trade_saved_by_another_worker(make_app: Callable[..., Flask]) -> None:
    # Two apps on one database, each with its own in-process cache: two gunicorn workers
    # without Redis. A trade saved through one must show in the other's next answer.
    first, second = make_app().test_client(), make_app().test_client()
    track_pnls(first, [10])
    assert first.get("/performance/stats").headers["X-Cache"] == "MISS"
    assert first.get("/performance/stats").headers["X-Cache"] == "HIT"
    assert second.post("/performance/track", json=trade(exit_price=95)).status_code == 201
    after = first.get("/performance/stats")
    assert (after.headers["X-Cache"], after.get_json()["total_trades"]) == ("MISS", 2)


def test_rebuild_stats_makes_cached_statistics_stale(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    track_pnls(client, [10])
    client.get("/performance/stats")
    assert client.get("/performance/stats").headers["X-Cache"] == "HIT"
    result = app.test_cli_runner().invoke(args=["rebuild-stats"])
    assert result.exit_code == 0, result.output
    assert client.get("/performance/stats").headers["X-Cache"] == "MISS"


def test_trade_client_id_is_idempotent(client: FlaskClient, rows: Callable[[], tuple[int, int]]) -> None:
    first = client.post("/performance/track", json=trade(client_id="fill-1"))
    client.get("/performance/stats")
    # the retry, a moment later, without exit_time (the server's clock) and with the defaults spelt out
    second = client.post("/performance/track", json=trade(client_id="fill-1", side="long", quantity=1, fees=0))
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json() == first.get_json()
    assert rows() == (0, 1)
    # a replay is not a new trade: the cached statistics stay valid
    assert client.get("/performance/stats").headers["X-Cache"] == "HIT"


def test_a_trade_client_id_reused_with_another_body_is_a_422(
    client: FlaskClient, rows: Callable[[], tuple[int, int]]
) -> None:
    first = client.post("/performance/track", json=trade(client_id="fill-1"))
    reused = client.post("/performance/track", json=trade(client_id="fill-1", exit_price=50, side="SHORT"))
    assert reused.status_code == 422
    error = reused.get_json()
    assert error["error"] == "idempotency_conflict"
    assert '"fill-1"' in error["message"]
    assert [d["field"] for d in error["details"]] == ["side", "exit_price"]
    assert rows() == (0, 1)
    assert client.get("/performance/stats").get_json()["total_trades"] == 1
    assert first.status_code == 201


def test_prices_keep_their_decimals(client: FlaskClient) -> None:
    stored = client.post(
        "/performance/track", json=trade(entry_price=0.1, exit_price=0.3, quantity=3, fees=0.6)
    ).get_json()
    assert stored["pnl"] == 0.0
    assert stored["outcome"] == "breakeven"


@pytest.mark.unit
def test_stats_from_a_lagging_standby_are_cached_under_the_standbys_version(tmp_path: Any) -> None:
    # DATABASE_READ_URL's standby behind the primary by one trade. Its answer may be old,
    # but it must be cached under the version it reflects: once the standby has caught up,
    # the next answer is the new one, never the old one cached under the new version.
    from database_service import create_app
    from database_service.storage import open_storage

    from shared.lifecycle import shutdown

    standby_url, primary_url = f"sqlite:///{tmp_path}/standby.db", f"sqlite:///{tmp_path}/primary.db"
    for url, pnls in ((standby_url, [10]), (primary_url, [10, -5])):
        writer = create_app({"TESTING": True, "DATABASE_URL": url, "REDIS_URL": None, "LOG_LEVEL": "WARNING"})
        track_pnls(writer.test_client(), pnls)
        shutdown(writer)
    app = create_app({"TESTING": True, "DATABASE_URL": primary_url, "REDIS_URL": None, "LOG_LEVEL": "WARNING"})
    client = app.test_client()
    lagging = app.extensions["read_storage"] = open_storage(standby_url)
    assert stats(client)["total_trades"] == 1  # what the standby has replayed
    app.extensions["read_storage"] = app.extensions["storage"]  # caught up
    after = client.get("/performance/stats")
    assert (after.headers["X-Cache"], after.get_json()["total_trades"]) == ("MISS", 2)
    lagging.close()
    shutdown(app)


def test_tracked_trades_are_read_back_latest_exit_first_in_cursor_pages(client: FlaskClient) -> None:
    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    # pairs of trades share an exit time: page edges cross ties, broken by id
    stored = [
        client.post(
            "/performance/track",
            json=trade(
                symbol="ETHUSDT" if n % 3 == 0 else "BTCUSDT",
                strategy=f"s{n % 2}",
                exit_time=base + n // 2 * 1000,
            ),
        ).get_json()
        for n in range(9)
    ]
    walked: list[dict[str, Any]] = []
    url = "/performance/trades?limit=2"
    while url:
        page = client.get(url).get_json()
        assert page["count"] == len(page["trades"]) <= 2
        walked += page["trades"]
        url = f"/performance/trades?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    newest_first = sorted(stored, key=lambda t: (t["exit_time"], t["id"]), reverse=True)
    assert walked == newest_first  # every trade once, as /performance/track answered it
    eth = client.get("/performance/trades", query_string={"symbol": "ethusdt", "strategy": "s0"}).get_json()
    assert [t["id"] for t in eth["trades"]] == [
        t["id"] for t in newest_first if t["symbol"] == "ETHUSDT" and t["strategy"] == "s0"
    ]
    window = client.get(
        "/performance/trades", query_string={"since": base + 1000, "until": base + 3000}
    ).get_json()
    assert sorted(t["id"] for t in window["trades"]) == [t["id"] for t in stored[2:6]]
    assert client.get("/performance/trades?until=1&since=2").status_code == 400
    assert client.get("/performance/trades?cursor=bad").status_code == 400
    assert client.get("/performance/trades?side=LONG").get_json()["details"][0]["field"] == "side"
