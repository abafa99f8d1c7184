"""shared.tracing with tracing off (the default), and the OTEL_* settings as the config reads them."""

from __future__ import annotations

import pytest

from shared import tracing
from shared.config import load_config


@pytest.mark.unit
def test_off_every_helper_is_the_one_shared_no_op() -> None:
    assert not tracing.enabled()
    with tracing.span("x", parent=f"00-{'a' * 32}-{'b' * 16}-01", kind="consumer") as span:
        assert span is tracing.NOOP_SPAN
        assert span.traceparent is None
        span.add_event("reconnect", {"reason": "test"})  # accepted and dropped
    assert tracing.start_span("y") is tracing.NOOP_SPAN
    assert tracing.current_traceparent() is None
    assert tracing.current_ids() is None
    assert tracing.sql_comment(None) == ""


@pytest.mark.unit
def test_sql_comment_is_sqlcommenters_form() -> None:
    traceparent = f"00-{'a' * 32}-{'b' * 16}-01"
    assert tracing.sql_comment(traceparent) == f" /*traceparent='{traceparent}'*/"


@pytest.mark.unit
def test_settings_follow_the_standard_variables() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, team=desk%20ops",
    }
    settings = tracing.TracingSettings.from_config(
        load_config("database-service", environ=environ, env_file=None)
    )
    assert settings.endpoint == "http://collector:4318/v1/traces"
    assert settings.service_name == "database-service"  # OTEL_SERVICE_NAME's default
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", 0.1)
    assert settings.resource == {"deployment.environment": "prod", "team": "desk ops"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("environ", "headers"),
    [
        ({}, {}),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t0k,x-team=desk"},
            {"authorization": "Bearer t0k", "x-team": "desk"},
        ),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2"}, {"b": "2"}),
    ],
)
def test_the_exporter_headers_come_from_the_standard_variables(
    environ: dict[str, str], headers: dict[str, str]
) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", **environ}
    settings = tracing.TracingSettings.from_config(
        load_config("database-service", environ=environ, env_file=None)
    )
    assert settings.headers == headers
    assert "t0k" not in repr(settings)  # a collector's token is never printed


@pytest.mark.unit
@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/traces"}, "https://c/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_SERVICE_NAME": "x"}, None),
    ],
)
def test_no_endpoint_or_disabled_means_off(environ: dict[str, str], endpoint: str | None) -> None:
    config = load_config("websocket-streaming", environ=environ, env_file=None)
    assert tracing.TracingSettings.from_config(config).endpoint == endpoint
