"""`Prefer: return=minimal` (RFC 7240) on POST /signals/save and /performance/track, both backends."""

from __future__ import annotations

import json
from typing import Any

import pytest
from database_service.prefer import preferences
from flask.testing import FlaskClient

pytestmark = [pytest.mark.api, pytest.mark.database]
MINIMAL = {"Prefer": "return=minimal"}


def signal(**fields: Any) -> dict[str, Any]:
    """A valid signal body, with fields overridden."""
    return {"symbol": "BTCUSDT", "action": "BUY", "price": 43250.5, **fields}


def trade(**fields: Any) -> dict[str, Any]:
    """A valid trade body, with fields overridden."""
    return {"symbol": "BTCUSDT", "entry_price": 100, "exit_price": 110, **fields}


def test_a_minimal_batch_answers_count_created_and_the_ids_in_order(client: FlaskClient) -> None:
    known = client.post("/signals/save", json=signal(client_id="known", price=1)).get_json()
    batch = [signal(price=2), signal(client_id="known", price=1), signal(price=3, metadata={"b": 1, "a": 2})]
    response = client.post("/signals/save", json=batch, headers=MINIMAL)
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "return=minimal"
    body = response.get_json()
    assert list(body) == ["count", "created", "ids"]
    assert (body["count"], body["created"]) == (3, 2)
    assert body["ids"][1] == known["id"]
    prices = [client.get(f"/signals/{i}").get_json()["price"] for i in body["ids"]]
    assert prices == [2.0, 1.0, 3.0]


def test_without_the_header_the_answer_is_the_stored_rows(client: FlaskClient) -> None:
    response = client.post("/signals/save", json=[signal(price=2), signal(price=3)])
    assert response.status_code == 201
    assert "Preference-Applied" not in response.headers
    body = json.loads(response.data)
    assert list(body) == ["count", "created", "signals"]
    for stored in body["signals"]:
        fetched = client.get(f"/signals/{stored['id']}")
        assert json.dumps(json.loads(fetched.data)) == json.dumps(stored)


def test_a_minimal_repeat_answers_200_with_the_stored_ids(client: FlaskClient) -> None:
    batch = [signal(client_id="a"), signal(client_id="b", price=7)]
    first = client.post("/signals/save", json=batch, headers=MINIMAL).get_json()
    again = client.post("/signals/save", json=batch, headers=MINIMAL)
    assert again.status_code == 200
    assert again.get_json() == {"count": 2, "created": 0, "ids": first["ids"]}


def test_one_signal_and_one_trade_answer_minimally_too(client: FlaskClient) -> None:
    saved = client.post("/signals/save", json=signal(client_id="one"), headers=MINIMAL)
    assert saved.status_code == 201
    signal_id = saved.get_json()["ids"][0]
    assert saved.get_json() == {"count": 1, "created": 1, "ids": [signal_id]}
    assert client.get(f"/signals/{signal_id}").get_json()["client_id"] == "one"
    tracked = client.post("/performance/track", json=trade(client_id="t1"), headers=MINIMAL)
    assert tracked.status_code == 201
    assert tracked.headers["Preference-Applied"] == "return=minimal"
    trade_id = tracked.get_json()["ids"][0]
    assert tracked.get_json() == {"count": 1, "created": 1, "ids": [trade_id]}
    repeated = client.post("/performance/track", json=trade(client_id="t1"), headers=MINIMAL)
    assert (repeated.status_code, repeated.get_json()) == (200, {"count": 1, "created": 0, "ids": [trade_id]})
    listed = client.get("/performance/trades").get_json()["trades"]
    assert [(t["id"], t["pnl"]) for t in listed] == [(trade_id, 10.0)]


def test_a_conflict_is_the_same_422_with_the_header(client: FlaskClient) -> None:
    client.post("/signals/save", json=signal(client_id="k"), headers=MINIMAL)
    response = client.post("/signals/save", json=[signal(client_id="k", price=1)], headers=MINIMAL)
    assert response.status_code == 422
    assert response.get_json()["error"] == "idempotency_conflict"
    assert "Preference-Applied" not in response.headers


@pytest.mark.parametrize(
    ("prefer", "applied"),
    [
        (["respond-async, return=minimal; extra=1, wait=10"], "return=minimal"),
        (["RETURN=minimal"], "return=minimal"),
        (['return="minimal"'], "return=minimal"),
        (["handling=lenient", "return=minimal"], "return=minimal"),
        (["return=minimal, return=representation"], "return=minimal"),
        (["return=representation, return=minimal"], "return=representation"),
        (["return=MINIMAL"], None),
        (["return", "return=", "=minimal", 'x="a,b", ;;, ,'], None),
        (["return minimal, r@turn=minimal, wait=abc"], None),
    ],
    ids=[
        "among-others",
        "name-any-case",
        "quoted",
        "second-header-line",
        "repeated-first-wins",
        "representation-first",
        "value-exact",
        "malformed",
        "unknown",
    ],
)
def test_unknown_repeated_or_malformed_preferences_are_ignored(
    client: FlaskClient, prefer: list[str], applied: str | None
) -> None:
    """RFC 7240: the first occurrence counts, the rest and anything unknown is ignored, never a 4xx."""
    headers = [("Prefer", value) for value in prefer]
    response = client.post("/signals/save", json=[signal(), signal(price=2)], headers=headers)
    assert response.status_code == 201
    assert response.headers.get("Preference-Applied") == applied
    body = response.get_json()
    assert ("ids" in body) is (applied == "return=minimal")
    assert ("signals" in body) is (applied != "return=minimal")


@pytest.mark.unit
def test_preferences_follow_rfc_7240() -> None:
    assert preferences(['Return=minimal; a="x;y", wait=10', "wait=1, handling=strict"]) == {
        "return": "minimal",
        "wait": "10",
        "handling": "strict",
    }
    assert preferences(['return="min\\"imal"']) == {"return": 'min"imal'}
    assert preferences(['="x", @=1, ok, a b=2, "unterminated']) == {"ok": ""}
