"""What every service gets from the shared base: errors, request ids, metrics, health, auth."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

import pytest
from flask import Flask

from shared.health_check import get_health

pytestmark = [pytest.mark.unit, pytest.mark.api]


def test_unknown_route_is_a_json_404(memory_app: Flask) -> None:
    response = memory_app.test_client().get("/nowhere")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found", "message": "The requested URL was not found."}


def test_wrong_method_is_a_json_405_with_allow(memory_app: Flask) -> None:
    response = memory_app.test_client().delete("/plain")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_body_over_one_mebibyte_is_a_json_413(memory_app: Flask) -> None:
    response = memory_app.test_client().post(
        "/write", data=b"x" * (1024 * 1024 + 1), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"


def test_unexpected_exception_is_a_json_500_without_a_trace(
    memory_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = memory_app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"] == "internal_error"
    assert "kaboom" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)
    assert any("kaboom" in str(r.exc_info) for r in caplog.records)  # logged for operators


def test_unavailable_carries_retry_after(memory_app: Flask) -> None:
    response = memory_app.test_client().get("/down")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    assert response.get_json() == {"error": "unavailable", "message": "no price yet"}


def test_request_id_is_echoed_or_generated(memory_app: Flask) -> None:
    client = memory_app.test_client()
    assert client.get("/plain", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = client.get("/plain").headers["X-Request-ID"]
    assert len(generated) == 32
    hostile = client.get("/plain", headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"]
    injected = client.get("/plain", headers={"X-Request-ID": "a b<script>"}).headers["X-Request-ID"]
    assert injected != "a b<script>"
    assert len(hostile) == 32  # an unusable id is replaced, not echoed


def test_one_json_access_line_per_request(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(REDIS_URL=None, LOG_LEVEL="INFO", API_KEY="sekrit-0123456789abc")
    app.test_client().get("/plain", headers={"X-Request-ID": "req-42", "X-API-Key": "sekrit-0123456789abc"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["message"] == "request"]
    assert len(access) == 1
    entry = access[0]
    assert entry["request_id"] == "req-42"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/plain", 200)
    assert "sekrit-0123456789abc" not in json.dumps(lines)


@pytest.mark.slow  # 679 requests
def test_metrics_use_the_url_rule_not_the_raw_path(memory_app: Flask) -> None:
    client = memory_app.test_client()
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for first in letters:
        for second in letters:
            client.get(f"/price/{first}{second}Z", environ_base={"REMOTE_ADDR": f"10.0.{first}.{second}"})
    for path in ("/nope/1", "/nope/2", "/zzz"):
        client.get(path)
    text = client.get("/metrics").get_data(as_text=True)
    series = [line for line in text.splitlines() if line.startswith("sardag_http_requests_total{")]
    price = [line for line in series if 'rule="/price/<symbol>"' in line]
    expected = 'method="GET",rule="/price/<symbol>",service="support-app",status="200"} 676.0'
    assert price == ["sardag_http_requests_total{" + expected]
    assert sum('rule="<unmatched>"' in line for line in series) == 1
    assert "AAZ" not in text
    assert "/nope/1" not in text


def test_latency_histogram_is_labelled_by_rule(memory_app: Flask) -> None:
    client = memory_app.test_client()
    client.get("/plain")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'sardag_http_request_duration_seconds_count{method="GET",rule="/plain",service="support-app"} 1.0'
        in text
    )


def test_health_reports_checks(memory_app: Flask) -> None:
    health = get_health(memory_app)
    health.add_check("database", lambda: True)
    health.add_check("cache", lambda: ("degraded", "in-process"), critical=False)
    body = memory_app.test_client().get("/health").get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["cache"] == {"status": "degraded", "detail": "in-process"}


def test_health_is_503_when_a_critical_check_is_down(memory_app: Flask) -> None:
    def broken() -> bool:
        raise ConnectionError("db gone")

    get_health(memory_app).add_check("database", broken)
    response = memory_app.test_client().get("/health")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unhealthy"
    assert response.get_json()["checks"]["database"]["detail"] == "ConnectionError"  # never its text


def test_health_non_critical_down_is_degraded(memory_app: Flask) -> None:
    get_health(memory_app).add_check("optional", lambda: False, critical=False)
    response = memory_app.test_client().get("/health")
    assert (response.status_code, response.get_json()["status"]) == (200, "degraded")


def test_writes_need_the_api_key_when_one_is_set(make_app: Callable[..., Flask]) -> None:
    client = make_app(REDIS_URL=None, API_KEY="s3cret-0123456789abc").test_client()
    assert client.post("/write").status_code == 401
    assert client.post("/write").get_json()["error"] == "unauthorized"
    assert client.post("/write", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/write", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.post("/write", headers={"X-API-Key": "s3cret-0123456789abc"}).status_code == 201
    assert client.post("/write", headers={"Authorization": "Bearer s3cret-0123456789abc"}).status_code == 201
    assert client.get("/plain").status_code == 200  # reads stay open


def test_writes_are_open_without_an_api_key(memory_app: Flask) -> None:
    assert memory_app.test_client().post("/write").status_code == 201


def test_text_log_format_carries_every_access_field(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(REDIS_URL=None, LOG_FORMAT="text", LOG_LEVEL="INFO")
    try:
        app.test_client().get("/plain?x=1", headers={"X-Request-ID": "req-7"})
        lines = [line for line in capsys.readouterr().err.splitlines() if " support-app.access " in line]
    finally:
        make_app(REDIS_URL=None, LOG_FORMAT="json")  # the default again for later tests
    assert len(lines) == 1, lines
    head, _, fields = lines[0].partition(" INFO support-app.access request ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", head), lines[0]
    values = dict(field.split("=", 1) for field in fields.split(" "))
    assert values.pop("duration_ms").replace(".", "").isdigit()
    assert values == {
        "method": "GET",
        "path": "/plain",
        "status": "200",
        "remote_addr": "127.0.0.1",
        "request_id": "req-7",
    }


def test_metrics_content_type_names_its_charset_once(memory_app: Flask) -> None:
    answer = memory_app.test_client().get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
