"""Every bad input is a 4xx in the JSON error shape, and nothing of it is stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sardag_testing import python_in_message

from shared.errors import unknown_parameter_message

pytestmark = [pytest.mark.api, pytest.mark.database]

GOOD = {"symbol": "BTCUSDT", "action": "BUY", "price": 1.5}
GOOD_TRADE = {"symbol": "BTCUSDT", "entry_price": 100, "exit_price": 110}


def _with(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**base, **fields}


def _without(base: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != name}


BAD_SIGNALS: dict[str, tuple[Any, str]] = {
    "missing symbol": (_without(GOOD, "symbol"), "symbol"),
    "missing action": (_without(GOOD, "action"), "action"),
    "missing price": (_without(GOOD, "price"), "price"),
    "price as string": (_with(GOOD, price="1.5"), "price"),
    "price as bool": (_with(GOOD, price=True), "price"),
    "symbol as number": (_with(GOOD, symbol=123), "symbol"),
    "zero price": (_with(GOOD, price=0), "price"),
    "negative price": (_with(GOOD, price=-1), "price"),
    "huge price": (_with(GOOD, price=1e300), "price"),
    "confidence 2": (_with(GOOD, confidence=2), "confidence"),
    "negative confidence": (_with(GOOD, confidence=-0.1), "confidence"),
    "unknown action": (_with(GOOD, action="SHORT"), "action"),
    "10 KB symbol": (_with(GOOD, symbol="A" * 10_240), "symbol"),
    "symbol with dash": (_with(GOOD, symbol="BTC-USDT"), "symbol"),
    "one-letter symbol": (_with(GOOD, symbol="B"), "symbol"),
    "strategy too long": (_with(GOOD, strategy="s" * 65), "strategy"),
    "bad timeframe": (_with(GOOD, timeframe="forever"), "timeframe"),
    "timestamp without zone": (_with(GOOD, timestamp="2026-11-24T10:00:00"), "timestamp"),
    "timestamp garbage": (_with(GOOD, timestamp="soon"), "timestamp"),
    "timestamp out of range": (_with(GOOD, timestamp=10**18), "timestamp"),
    "metadata not an object": (_with(GOOD, metadata=[1, 2]), "metadata"),
    "metadata a string": (_with(GOOD, metadata="{}"), "metadata"),
    "metadata over 16 KiB": (_with(GOOD, metadata={"x": "y" * 16_400}), "metadata"),
    "metadata too deep": (_with(GOOD, metadata=json.loads('{"a":' * 40 + "1" + "}" * 40)), "metadata"),
    "metadata huge number": (_with(GOOD, metadata={"n": 1e308 * 10}), None),
    "unknown field": (_with(GOOD, colour="red"), "colour"),
    "NUL in strategy": (_with(GOOD, strategy="a\x00b"), "strategy"),
    "NUL in metadata": (_with(GOOD, metadata={"k": "a\x00"}), "metadata.k"),
    "empty client_id": (_with(GOOD, client_id=""), "client_id"),
    "body a string": ("BUY", "body"),
    "body null": (None, "body"),
    "empty array": ([], "body"),
    "array of 1001": ([GOOD] * 1001, "body"),
    "array with one bad element": ([GOOD, GOOD, _with(GOOD, price=-1), GOOD], "[2].price"),
    "array of non-objects": ([GOOD, 5], "[1]"),
}


@pytest.mark.parametrize(("body", "field"), BAD_SIGNALS.values(), ids=BAD_SIGNALS.keys())
def test_bad_signal_is_400_and_nothing_stored(
    client: FlaskClient, rows: Callable[[], tuple[int, int]], body: Any, field: str | None
) -> None:
    text = json.dumps(body)  # Infinity from 1e308 * 10 is written as the literal Infinity
    response = client.post("/signals/save", data=text, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()
    assert set(error) <= {"error", "message", "details"}
    if field is None:
        assert error["error"] == "invalid_json"
    else:
        assert error["error"] == "validation_error"
        assert field in [d["field"] for d in error["details"]]
    assert "A" * 100 not in response.get_data(as_text=True)  # the 10 KB input is not echoed
    assert python_in_message(response.get_data(as_text=True)) == []
    assert rows() == (0, 0)


RAW_BODIES: dict[str, tuple[bytes, str, int, str]] = {
    "NaN": (b'{"symbol":"BTCUSDT","action":"BUY","price":NaN}', "application/json", 400, "invalid_json"),
    "Infinity": (
        b'{"symbol":"BTCUSDT","action":"BUY","price":Infinity}',
        "application/json",
        400,
        "invalid_json",
    ),
    "-Infinity": (
        b'{"symbol":"BTCUSDT","action":"BUY","price":-Infinity}',
        "application/json",
        400,
        "invalid_json",
    ),
    "truncated JSON": (b'{"symbol":"BTCUSDT",', "application/json", 400, "invalid_json"),
    "empty body": (b"", "application/json", 400, "invalid_json"),
    "not UTF-8": (b'{"symbol":"\xff\xfe"}', "application/json", 400, "invalid_json"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "invalid_json"),
    "lone surrogate": (
        b'{"symbol":"BTCUSDT","action":"BUY","price":1,"strategy":"\\ud800"}',
        "application/json",
        400,
        "validation_error",
    ),
    "huge integer": (
        b'{"symbol":"BTCUSDT","action":"BUY","price":' + b"9" * 5000 + b"}",
        "application/json",
        400,
        "invalid_json",
    ),
    "huge exponent": (
        b'{"symbol":"BTCUSDT","action":"BUY","price":1e999999999}',
        "application/json",
        400,
        "validation_error",
    ),
    "exponent beyond any decimal": (
        b'{"symbol":"BTCUSDT","action":"BUY","price":1e99999999999999999999}',
        "application/json",
        400,
        "invalid_json",
    ),
    "form content type": (
        b"symbol=BTCUSDT",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    "text content type": (json.dumps(GOOD).encode(), "text/plain", 415, "unsupported_media_type"),
    "body over 1 MiB": (b'{"a":"' + b"x" * (1024 * 1024) + b'"}', "application/json", 413, "payload_too_large"),
}


@pytest.mark.parametrize(("raw", "ctype", "status", "code"), RAW_BODIES.values(), ids=RAW_BODIES.keys())
@pytest.mark.parametrize("path", ["/signals/save", "/performance/track"])
def test_malformed_body_is_refused_and_nothing_stored(
    client: FlaskClient,
    rows: Callable[[], tuple[int, int]],
    path: str,
    raw: bytes,
    ctype: str,
    status: int,
    code: str,
) -> None:
    response = client.post(path, data=raw, content_type=ctype)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert python_in_message(response.get_data(as_text=True)) == []
    assert rows() == (0, 0)


def test_no_content_type_is_415(client: FlaskClient) -> None:
    response = client.post("/signals/save", data=json.dumps(GOOD))
    assert response.status_code == 415


BAD_TRADES: dict[str, tuple[Any, str]] = {
    "missing entry_price": (_without(GOOD_TRADE, "entry_price"), "entry_price"),
    "missing exit_price": (_without(GOOD_TRADE, "exit_price"), "exit_price"),
    "zero exit_price": (_with(GOOD_TRADE, exit_price=0), "exit_price"),
    "negative quantity": (_with(GOOD_TRADE, quantity=-1), "quantity"),
    "negative fees": (_with(GOOD_TRADE, fees=-0.01), "fees"),
    "unknown side": (_with(GOOD_TRADE, side="SIDEWAYS"), "side"),
    "signal_id as string": (_with(GOOD_TRADE, signal_id="7"), "signal_id"),
    "signal_id with a fraction": (_with(GOOD_TRADE, signal_id=7.5), "signal_id"),
    "signal_id too big": (_with(GOOD_TRADE, signal_id=2**63), "signal_id"),
    "entry after exit": (
        _with(GOOD_TRADE, entry_time="2026-11-24T11:00:00Z", exit_time="2026-11-24T10:00:00Z"),
        "entry_time",
    ),
    "entry in the future": (_with(GOOD_TRADE, entry_time="2199-01-01T00:00:00Z"), "entry_time"),
    "array of trades": ([GOOD_TRADE], "body"),
    "metadata not an object": (_with(GOOD_TRADE, metadata=3), "metadata"),
}


@pytest.mark.parametrize(("body", "field"), BAD_TRADES.values(), ids=BAD_TRADES.keys())
def test_bad_trade_is_400_and_nothing_stored(
    client: FlaskClient, rows: Callable[[], tuple[int, int]], body: Any, field: str
) -> None:
    response = client.post("/performance/track", json=body)
    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert python_in_message(response.get_data(as_text=True)) == []
    assert rows() == (0, 0)


BAD_QUERIES: dict[str, tuple[str, str]] = {
    "limit=0": ("/signals/history?limit=0", "limit"),
    "limit=100000": ("/signals/history?limit=100000", "limit"),
    "limit=abc": ("/signals/history?limit=abc", "limit"),
    "bad cursor": ("/signals/history?cursor=not-a-cursor", "cursor"),
    "cursor of the wrong length": ("/signals/history?cursor=djE6eHl6", "cursor"),
    "repeated parameter": ("/signals/history?symbol=BTCUSDT&symbol=ETHUSDT", "symbol"),
    "bad since": ("/signals/history?since=yesterday", "since"),
    "bad action": ("/signals/history?action=SHORT", "action"),
    "unknown parameter": ("/signals/history?symbl=BTCUSDT", "symbl"),
    "bad group_by": ("/performance/stats?group_by=side", "group_by"),
    "bad stats until": ("/performance/stats?until=2026-13-01T00:00:00Z", "until"),
    "NUL in a filter": ("/signals/history?strategy=a%00b", "strategy"),
    "strategy too long": ("/performance/stats?strategy=" + "s" * 65, "strategy"),
    "since after until": ("/signals/history?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
    "stats since after until": ("/performance/stats?since=1767312000000&until=1767225600000", "since"),
    "unknown stats parameter": ("/performance/stats?foo=1", "foo"),
}


@pytest.mark.parametrize(("url", "field"), BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
def test_bad_query_is_400(client: FlaskClient, url: str, field: str) -> None:
    response = client.get(url)
    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert python_in_message(response.get_data(as_text=True)) == []


def test_wrong_method_is_405_json(client: FlaskClient) -> None:
    response = client.get("/signals/save")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("body", "field"),
    [([GOOD, 5], "[1]"), ([GOOD, "x"], "[1]"), (_with(GOOD, metadata=[1]), "metadata")],
    ids=["number in an array", "string in an array", "metadata an array"],
)
def test_a_non_object_is_named_a_json_object_not_an_internal_class(
    client: FlaskClient, body: Any, field: str
) -> None:
    error = client.post("/signals/save", json=body).get_json()
    assert {"field": field, "message": "must be a JSON object"} in error["details"]
    assert "SignalIn" not in json.dumps(error)
    assert "instance of" not in json.dumps(error)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (_with(GOOD, price=0), "price", "must be a number greater than 0"),
        (_with(GOOD, price=1e15), "price", "must be below 1e15"),
        (_with(GOOD, confidence=2), "confidence", "must be at most 1"),
        (_with(GOOD, strategy="a\u0000b"), "strategy", "must not contain NUL characters"),
        (_with(GOOD, timeframe="fast"), "timeframe", "must be a count and a unit (s m h d w M), e.g. 15m"),
        (_with(GOOD, strategy=""), "strategy", "must not be empty"),
        (_with(GOOD, unknown=1), "unknown", "is not a field of this body"),
        (_without(GOOD, "symbol"), "symbol", "is required"),
        ([], "body", "must have at least 1 item(s)"),
    ],
    ids=["zero price", "price 1e15", "confidence 2", "NUL", "timeframe", "empty", "unknown", "missing", "[]"],
)
def test_messages_read_like_the_documentation_not_like_python(
    client: FlaskClient, body: Any, field: str, message: str
) -> None:
    error = client.post("/signals/save", json=body).get_json()
    assert {"field": field, "message": message} in error["details"]


def test_since_after_until_is_400_naming_both(client: FlaskClient) -> None:
    for path in ("/signals/history", "/performance/stats"):
        response = client.get(f"{path}?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
        assert response.status_code == 400
        assert response.get_json()["details"] == [{"field": "since", "message": "must not be later than until"}]
    # equal bounds are a valid, empty half-open range
    assert client.get("/signals/history?since=1767225600000&until=1767225600000").status_code == 200


def test_an_unknown_parameter_gets_the_wording_websocket_streaming_uses(client: FlaskClient) -> None:
    details = client.get("/performance/stats?symbl=BTCUSDT").get_json()["details"]
    assert details == [
        {
            "field": "symbl",
            "message": unknown_parameter_message(["group_by", "since", "strategy", "symbol", "until"]),
        }
    ]
    assert details[0]["message"] == (
        "is not a parameter of this operation, which takes group_by, since, strategy, symbol, until"
    )
