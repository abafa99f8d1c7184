"""The test support code that judges other tests: it must see what it is there to see."""

from __future__ import annotations

import json
import urllib.request

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from sardag_testing import python_in_message
from sardag_testing.otlp import otlp_receiver

pytestmark = pytest.mark.unit


def answer(message: str, field: str = "limit") -> str:
    return json.dumps({"error": "validation_error", "message": message, "details": [{"field": field}]})


def test_python_in_a_message_is_found() -> None:
    found = python_in_message(answer("Input should be greater than Decimal('5E-324') matching '^[A-Z]+$'"))
    assert found == ["Input should", "Decimal(", "^[A-Z]+$"]


def test_the_clients_own_words_quoted_back_are_not_python() -> None:
    name = "^\u00a8\U000a1d3b$"  # a fuzzed parameter name that looks like a pattern
    body = answer("is not a parameter of this operation", field=name)
    assert python_in_message(body) != []  # read without knowing what the client sent
    assert python_in_message(body, [name, "1"]) == []


def test_python_beside_the_clients_words_is_still_found() -> None:
    body = answer(f"{'^x$'} is not a parameter; Input should be a valid integer", field="^x$")
    assert python_in_message(body, ["^x$"]) == ["Input should"]


def export(endpoint: str, request: ExportTraceServiceRequest) -> None:
    posted = urllib.request.Request(
        f"{endpoint}/v1/traces",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(posted, timeout=5) as reply:
        assert reply.status == 200


def test_a_batch_sent_again_keeps_each_span_once() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for n in (1, 2):
        span = spans.add()
        span.trace_id, span.span_id, span.name = b"\x01" * 16, bytes([n]) * 8, f"span {n}"
    with otlp_receiver() as receiver:
        export(receiver.endpoint, request)
        export(receiver.endpoint, request)  # the exporter's retry of a batch whose answer came late
        assert receiver.requests == 2
        assert [s.name for s in receiver.trace("01" * 16)] == ["span 1", "span 2"]
        assert receiver.repeated == 2
