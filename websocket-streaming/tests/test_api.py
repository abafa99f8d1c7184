"""HTTP API answers without any price received: validation, errors, limits, shapes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fake_exchange import FakeExchange
from flask import Flask
from websocket_streaming import create_app, get_service
from websocket_streaming.parser import PriceUpdate, dec

from .conftest import app_config

pytestmark = [pytest.mark.api, pytest.mark.unit]


def test_symbols_lists_the_tracked_symbols(idle_app: Flask) -> None:
    answer = idle_app.test_client().get("/symbols")
    assert answer.status_code == 200
    assert answer.get_json() == {"symbols": ["BTCUSDT", "ETHUSDT", "BNBUSDT", "BNBBTC"]}


def test_price_is_503_with_retry_after_while_nothing_was_received(idle_app: Flask) -> None:
    answer = idle_app.test_client().get("/price/BTCUSDT")
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "unavailable"
    assert int(answer.headers["Retry-After"]) >= 1


def test_price_is_case_insensitive(idle_app: Flask) -> None:
    get_service(idle_app).book.apply(PriceUpdate("BTCUSDT", "trade", 1, price=dec("42.10")))
    for name in ("BTCUSDT", "btcusdt", "BtcUsdt"):
        answer = idle_app.test_client().get(f"/price/{name}")
        assert answer.status_code == 200
        assert answer.get_json()["symbol"] == "BTCUSDT"
        assert b'"price":42.10,' in answer.data


@pytest.mark.parametrize(
    "symbol",
    ["B", "A" * 21, "BTC-USDT", "BTC_USDT", "BTC%20USDT", "%00", "BTC%C3%A9", "%27%20OR%201=1"],
)
def test_malformed_symbol_is_400_validation_error(idle_app: Flask, symbol: str) -> None:
    answer = idle_app.test_client().get(f"/price/{symbol}")
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "validation_error"
    assert body["details"][0]["field"] == "symbol"


def test_slash_in_symbol_is_a_json_404(idle_app: Flask) -> None:
    answer = idle_app.test_client().get("/price/..%2F..%2Fetc")
    assert answer.status_code == 404
    assert answer.get_json()["error"] == "not_found"


def test_untracked_symbol_is_404_not_found(idle_app: Flask) -> None:
    answer = idle_app.test_client().get("/price/DOGEUSDT")
    assert answer.status_code == 404
    assert answer.get_json()["error"] == "not_found"


def test_oversized_path_is_a_clean_json_error(idle_app: Flask) -> None:
    answer = idle_app.test_client().get("/price/" + "A" * 10_000)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "validation_error"


def test_post_is_405_json(idle_app: Flask) -> None:
    answer = idle_app.test_client().post("/price/BTCUSDT", data="x" * 100)
    assert answer.status_code == 405
    assert answer.get_json()["error"] == "method_not_allowed"


@pytest.mark.slow
def test_price_allows_300_per_minute_then_429(fake: FakeExchange) -> None:
    client = create_app(app_config(fake, INGEST_ENABLED=False, RATE_LIMITS={})).test_client()
    statuses = [client.get("/price/BTCUSDT").status_code for _ in range(300)]
    assert statuses == [503] * 300  # limited responses are not rejected yet
    rejected = client.get("/price/BTCUSDT")
    assert rejected.status_code == 429
    assert rejected.get_json()["error"] == "rate_limited"
    assert int(rejected.headers["Retry-After"]) >= 1
    assert rejected.headers["X-RateLimit-Limit"] == "300"


def test_prices_lists_known_prices_and_missing_symbols(idle_app: Flask) -> None:
    get_service(idle_app).book.apply(PriceUpdate("ETHUSDT", "trade", 1, price=dec("3000.01")))
    body = idle_app.test_client().get("/prices").get_json()
    assert [p["symbol"] for p in body["prices"]] == ["ETHUSDT"]
    assert body["missing"] == ["BTCUSDT", "BNBUSDT", "BNBBTC"]


def test_stream_rejects_malformed_and_untracked_symbol_filters(idle_app: Flask) -> None:
    client = idle_app.test_client()
    assert client.get("/stream?symbols=BTC-USDT").get_json()["error"] == "validation_error"
    assert client.get("/stream?symbols=BTCUSDT,DOGEUSDT").status_code == 404


@pytest.mark.parametrize(
    "query",
    ["symbols=", "symbols=BTCUSDT,", "symbols=BTCUSDT&symbols=ETHUSDT", "symbols=" + "A" * 5000, "symbols=%00"],
)
def test_stream_refuses_empty_repeated_oversized_and_hostile_symbol_filters(
    idle_app: Flask, query: str
) -> None:
    answer = idle_app.test_client().get(f"/stream?{query}")
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "validation_error"
    assert [d["field"] for d in body["details"]] == ["symbols"]


def test_the_index_and_the_document_answer_json_and_refuse_other_methods(idle_app: Flask) -> None:
    client = idle_app.test_client()
    index = client.get("/").get_json()
    assert (index["service"], index["links"]["openapi"]) == ("websocket-streaming", "/openapi.json")
    documented = client.get("/openapi.json").get_json()["paths"]
    served = {rule.rule.replace("<", "{").replace(">", "}") for rule in idle_app.url_map.iter_rules()}
    assert set(documented) == served - {"/static/{path:filename}"}
    for path in ("/", "/openapi.json"):
        refused = client.post(path, data="{" * 1000)
        assert refused.status_code == 405
        assert refused.get_json()["error"] == "method_not_allowed"


def test_stats_answer_while_nothing_was_received(idle_app: Flask) -> None:
    stats = idle_app.test_client().get("/stats").get_json()
    assert stats["messages_total"] == 0
    assert stats["parse_errors"] == 0
    assert stats["reconnects"] == 0
    assert stats["uptime_seconds"] >= 0


def test_health_is_unhealthy_when_nothing_can_ever_feed_the_process(idle_app: Flask) -> None:
    health = idle_app.test_client().get("/health")  # INGEST_ENABLED=0 and no REDIS_URL
    assert health.status_code == 503
    body = health.get_json()
    assert body["status"] == "unhealthy"
    assert "nothing feeds this process" in body["checks"]["ingest"]["detail"]
    upstream = body["checks"]["upstream"]
    assert upstream["status"] == "degraded"
    assert upstream["detail"]["connected"] is False


def test_price_and_prices_bodies_end_with_a_newline_like_every_other_body(idle_app: Flask) -> None:
    get_service(idle_app).book.apply(PriceUpdate("BTCUSDT", "trade", 1, price=dec("42.10")))
    client = idle_app.test_client()
    for path in ("/price/BTCUSDT", "/prices", "/symbols", "/stats"):
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.data.endswith(b"}\n"), path


@pytest.mark.parametrize("path", ["/prices?foo=1", "/price/BTCUSDT?foo=1", "/symbols?foo=1", "/stats?foo=1"])
def test_an_unknown_query_parameter_is_refused_like_database_service(idle_app: Flask, path: str) -> None:
    answer = idle_app.test_client().get(path)
    assert answer.status_code == 400
    assert answer.get_json()["details"] == [
        {"field": "foo", "message": "is not a parameter of this operation, which takes none"}
    ]


def test_stream_names_the_parameter_it_takes(idle_app: Flask) -> None:
    answer = idle_app.test_client().get("/stream?symbol=BTCUSDT")  # `symbols`, plural
    assert answer.status_code == 400
    assert answer.get_json()["details"] == [
        {"field": "symbol", "message": "is not a parameter of this operation, which takes events, symbols"}
    ]


def test_index_lists_every_documented_operation(idle_app: Flask) -> None:
    client = idle_app.test_client()
    routes = client.get("/").get_json()["routes"]
    paths = client.get("/openapi.json").get_json()["paths"]
    assert sorted(routes) == sorted(
        f"{method.upper()} {path}" for path, item in paths.items() for method in item
    )
    assert "GET /price/{symbol}" in routes


def test_price_and_prices_give_the_book_ticker_quote_with_sizes_and_its_own_time(idle_app: Flask) -> None:
    service = get_service(idle_app)
    trade = {"e": "trade", "E": 1_000_000, "s": "ETHUSDT", "t": 5, "p": "3000.01", "q": "1", "T": 1}
    quote = {"u": 42, "s": "ETHUSDT", "b": "3000.00", "B": "0.12500000", "a": "3000.02", "A": "7.00000000"}
    service.handle_frame(json.dumps({"stream": "ethusdt@trade", "data": trade}).encode(), 1000.0)
    service.handle_frame(json.dumps({"stream": "ethusdt@bookTicker", "data": quote}).encode(), 1000.25)
    later = {**trade, "E": 1_000_500, "t": 6, "p": "3000.05"}  # a trade after it keeps the quote's own time
    service.handle_frame(json.dumps({"stream": "ethusdt@trade", "data": later}).encode(), 1000.5)
    client = idle_app.test_client()
    one = client.get("/price/ETHUSDT")
    [listed] = json.loads(client.get("/prices").data, parse_float=Decimal)["prices"]
    for answer in (json.loads(one.data, parse_float=Decimal), listed):
        assert answer["price"] == Decimal("3000.05")  # the last trade, as before
        assert (answer["bid"], answer["bid_qty"], answer["ask"], answer["ask_qty"]) == (
            Decimal("3000.00"),
            Decimal("0.12500000"),
            Decimal("3000.02"),
            Decimal("7.00000000"),
        )
        assert (answer["quote_id"], answer["quote_time"], answer["received_at"]) == (42, 1_000_250, 1_000_500)
        assert answer["quote_age_seconds"] >= 0
    assert b'"bid":3000.00,"bid_qty":0.12500000,' in one.data  # the exchange's digits, as JSON numbers


def test_the_document_describes_each_stream_event_type_and_the_quote_fields(idle_app: Flask) -> None:
    document = idle_app.test_client().get("/openapi.json").get_json()
    stream = document["paths"]["/stream"]["get"]
    events = stream["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
    assert {"price", "quote", "overflow"} <= {e["properties"]["event"]["const"] for e in events}
    [param] = [p for p in stream["parameters"] if p["name"] == "events"]
    assert "quote" in param["description"]
    price = document["components"]["schemas"]["Price"]["properties"]
    assert {"bid", "bid_qty", "ask", "ask_qty", "quote_id", "quote_time", "quote_age_seconds"} <= set(price)
