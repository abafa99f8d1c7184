"""Distributed tracing (OpenTelemetry), configured by the standard OTEL_* variables.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: then
nothing of OpenTelemetry is even imported, and every span helper below returns one shared
no-op object. On, `shared.tracing_sdk` starts the SDK once per process (the first app a
gunicorn worker builds, after the fork: the batch span processor's thread and queue must
not cross a fork), instruments Flask, psycopg2, redis and requests, and exports over
OTLP/HTTP in batches from a background thread; a request never waits on the collector.

The helpers take and give the W3C `traceparent` string, so code that carries a trace
context across a process (a record published through Redis) never imports OpenTelemetry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask

from shared.config import ConfigError
from shared.lifecycle import on_shutdown

if TYPE_CHECKING:
    from shared.tracing_sdk import Backend

EXTENSION = "sardag_tracing"
Attributes = Mapping[str, str | int | float | bool]


class Span(Protocol):
    """What the services use of a span: events, attributes, its traceparent, its end."""

    @property
    def traceparent(self) -> str | None:
        """The span's W3C traceparent when it is sampled (else None: nothing to carry)."""

    def add_event(self, name: str, attributes: Attributes | None = None) -> None:
        """Record a point in time on the span (a reconnect and its reason, say)."""

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Set one attribute."""

    def end(self) -> None:
        """End the span (it is exported in the next batch)."""


class _NoopSpan:
    """The span of tracing off: every call does nothing."""

    traceparent = None

    def add_event(self, name: str, attributes: Attributes | None = None) -> None:
        """Nothing (tracing is off)."""

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Nothing (tracing is off)."""

    def end(self) -> None:
        """Nothing (tracing is off)."""


NOOP_SPAN: Span = _NoopSpan()
_NOOP_CONTEXT: contextlib.nullcontext[Span] = contextlib.nullcontext(NOOP_SPAN)  # reusable
_backend: Backend | None = None  # set once per process by `init_app` when tracing is on


@dataclass(frozen=True)
class TracingSettings:
    """The OTEL_* values one app was configured with (already validated by shared.config)."""

    endpoint: str | None
    service_name: str
    sampler: str
    sampler_arg: float | None
    resource: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # a collector's token: never printed

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TracingSettings:
        """The tracing settings in a loaded configuration."""
        traces = config.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        base = config.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        endpoint = traces or (f"{base.rstrip('/')}/v1/traces" if base else None)
        if config.get("OTEL_SDK_DISABLED"):
            endpoint = None
        return cls(
            endpoint=endpoint,
            service_name=config.get("OTEL_SERVICE_NAME") or str(config["SERVICE_NAME"]),
            sampler=str(config.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on"),
            sampler_arg=config.get("OTEL_TRACES_SAMPLER_ARG"),
            resource=dict(config.get("OTEL_RESOURCE_ATTRIBUTES") or {}),
            headers=dict(_first(config, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")),
        )


def _first(config: Mapping[str, Any], *names: str) -> Any:
    """The value of the first of `names` that is set (non-empty) in `config`, else `{}`."""
    return next((config[name] for name in names if config.get(name)), {})


def init_app(app: Flask) -> None:
    """Start tracing for `app` when an OTLP endpoint is configured; else do nothing at all."""
    settings = TracingSettings.from_config(app.config)
    app.extensions[EXTENSION] = None
    if settings.endpoint is None:
        return
    try:
        from shared import tracing_sdk
    except ImportError as exc:  # the `tracing` extra is not installed
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"tracing needs OpenTelemetry, which is not installed ({exc.name}): "
            "pip install 'sardag-services[tracing]', or unset the variable",
        ) from None
    global _backend
    backend = _backend = tracing_sdk.start(settings)
    backend.instrument_app(app)
    app.extensions[EXTENSION] = backend
    on_shutdown(app, backend.flush)


def enabled() -> bool:
    """True when this process exports spans."""
    return _backend is not None


def span(
    name: str,
    *,
    parent: str | None = None,
    links: Sequence[str] = (),
    kind: str = "internal",
    attributes: Attributes | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span made current for the block: calls inside it (SQL, Redis) become its children.

    `parent`: a traceparent from another process (None: the current span, or a new trace);
    `links`: traceparents of other traces this work also belongs to (a batch's records);
    `kind`: internal, server, client, producer or consumer.
    """
    backend = _backend
    if backend is None:
        return _NOOP_CONTEXT
    return backend.span(name, parent, links, kind, attributes)


def start_span(
    name: str, *, parent: str | None = None, kind: str = "internal", attributes: Attributes | None = None
) -> Span:
    """A span that is not made current; end it with `.end()`, from any thread."""
    backend = _backend
    if backend is None:
        return NOOP_SPAN
    return backend.start_span(name, parent, kind, attributes)


def current_traceparent() -> str | None:
    """The traceparent of the current span when it is sampled (None when off or not sampled)."""
    backend = _backend
    return None if backend is None else backend.current_traceparent()


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span as hex, when there is a valid one."""
    backend = _backend
    return None if backend is None else backend.current_ids()


def sql_comment(traceparent: str | None) -> str:
    """` /*traceparent='...'*/` (sqlcommenter's form) for a statement the driver's
    instrumentation cannot comment (COPY), or "" without a sampled span."""
    return "" if traceparent is None else f" /*traceparent='{traceparent}'*/"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No instrumentation spans in the block (background loops: lock renewals, heartbeats)."""
    backend = _backend
    if backend is None:
        yield
        return
    with backend.quiet():
        yield
