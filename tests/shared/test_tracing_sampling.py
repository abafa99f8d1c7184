"""The samplers OTEL_TRACES_SAMPLER names, and the root sampler HeadSampler asks without a parent."""

from __future__ import annotations

import random

import pytest
from opentelemetry.trace import SpanKind

from shared.config import OTEL_SAMPLERS
from shared.tracing import TracingSettings
from shared.tracing_sdk import make_samplers

_IDS = random.Random(17)
TRACE_IDS = [_IDS.getrandbits(128) for _ in range(4000)]
KEPT = {"always_on": 1.0, "always_off": 0.0}  # the ratio samplers keep their argument's share


@pytest.mark.unit
@pytest.mark.parametrize("ratio", [None, 0.0, 0.1, 1.0])
@pytest.mark.parametrize("name", OTEL_SAMPLERS)
def test_a_request_without_a_traceparent_gets_the_configured_samplers_decision(
    name: str, ratio: float | None
) -> None:
    settings = TracingSettings("http://collector:4318/v1/traces", "database-service", name, ratio)
    configured, root = make_samplers(settings)
    decisions = [configured.should_sample(None, t, "GET", SpanKind.SERVER).decision for t in TRACE_IDS]
    # HeadSampler asks `root` alone for a request without a parent: the same answer, every id.
    assert decisions == [root.should_sample(None, t, "GET", SpanKind.SERVER).decision for t in TRACE_IDS]
    share = sum(decision.is_sampled() for decision in decisions) / len(TRACE_IDS)
    expected = KEPT.get(name.removeprefix("parentbased_"), 1.0 if ratio is None else ratio)
    assert share == pytest.approx(expected, abs=0.02)
    assert configured.get_description().startswith(
        "ParentBased" if name.startswith("parentbased_") else root.get_description()
    )
