"""The OpenTelemetry side of `shared.tracing`: imported only when tracing is on."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from flask import Flask
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY, suppress_instrumentation
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import sampling as samplers
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.http import parse_excluded_urls

from shared.metrics import get_metrics

if TYPE_CHECKING:  # shared.tracing imports this module when tracing is on
    from shared.tracing import Attributes, TracingSettings

log = logging.getLogger("shared.tracing")
DropCounter = Callable[[str, int], None]  # (reason, spans)
_KINDS = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
# Scrapes and probes would be most of the traces and say nothing. Matched on the path
# (OTEL_PYTHON_FLASK_EXCLUDED_URLS, else OTEL_PYTHON_EXCLUDED_URLS, as the instrumentation
# reads them: comma-separated regular expressions, replacing the list).
DEFAULT_EXCLUDED_URLS = r"/metrics(\?|$),/health(\?|$),/livez(\?|$),/readyz(\?|$)"
_PROPAGATOR = TraceContextTextMapPropagator()
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)
_lock = threading.Lock()
_backend: Backend | None = None  # the provider is process-global: one backend per process


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting the spans of every batch it could not deliver.

    The exporter logs every retry of every batch; with the collector away for an hour that
    is thousands of lines per worker. Its own lines are silenced; this says once when
    exporting starts failing and once when it works again, and the counter has the rest.
    """

    def __init__(self, exporter: SpanExporter, dropped: DropCounter) -> None:
        self.exporter = exporter
        self.dropped = dropped
        self.failing = False
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send one batch (retried by the exporter within its timeout); count it if lost."""
        result = self.exporter.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.dropped("export_failed", len(spans))
            if not self.failing:
                log.warning("trace export failing (collector unreachable or refusing): spans are dropped")
        elif self.failing:
            log.info("trace export works again")
        self.failing = result is not SpanExportResult.SUCCESS
        return result

    def shutdown(self) -> None:
        """Shut the OTLP exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the OTLP exporter."""
        return self.exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A batch span processor that counts the spans it drops for a full queue, quietly.

    The SDK logs one warning per span dropped that way: a collector away for a minute would
    write thousands of lines. Here they are counted (sardag_trace_spans_dropped_total) and
    said once per state change.
    """

    def __init__(self, exporter: SpanExporter, dropped: DropCounter) -> None:
        super().__init__(exporter)
        self.dropped = dropped
        self._full = False

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the sampled span, or count it when the queue is full."""
        if not span.context.trace_flags.sampled:
            return
        # The SDK's own queue (private: the SDK is pinned to one minor series, and
        # test_ops_tracing's hung-collector test fails if this stops counting).
        batch = self._batch_processor
        if len(batch._queue) >= batch._max_queue_size:
            self.dropped("queue_full", 1)
            if not self._full:
                self._full = True
                log.warning("trace export queue full (collector slow or away): dropping spans")
            return
        self._full = False
        super().on_end(span)


class _Span:
    """An SDK span behind the `shared.tracing.Span` protocol."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def traceparent(self) -> str | None:
        return traceparent_of(self._span.get_span_context())

    def add_event(self, name: str, attributes: Attributes | None = None) -> None:
        self._span.add_event(name, dict(attributes or {}))

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def end(self) -> None:
        self._span.end()


def traceparent_of(ctx: trace.SpanContext) -> str | None:
    """The W3C traceparent of a sampled span context (None otherwise)."""
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """A context whose parent is `traceparent` (None: no parent given, or not a valid one)."""
    if not traceparent:
        return None
    found = _PROPAGATOR.extract({"traceparent": traceparent})
    return found if trace.get_current_span(found).get_span_context().is_valid else None


class Backend:
    """The process's tracer provider, its instrumentations, and the span helpers on it."""

    def __init__(self, settings: TracingSettings) -> None:
        self.settings = settings
        self._counters: list[DropCounter] = []
        resource = Resource.create(
            {
                **settings.resource,
                "service.name": settings.service_name,
                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            }
        )
        self.sampler, self.root_sampler = make_samplers(settings)
        self.provider = TracerProvider(resource=resource, sampler=HeadSampled(self.sampler))
        otlp = OTLPSpanExporter(endpoint=settings.endpoint, headers=settings.headers or None)
        exporter = CountingExporter(otlp, self._dropped)
        self.processor = CountingBatchSpanProcessor(exporter, self._dropped)
        self.provider.add_span_processor(self.processor)
        trace.set_tracer_provider(self.provider)
        self.tracer = self.provider.get_tracer("sardag")
        _instrument_libraries()
        _tag_sentry_events()

    def _dropped(self, reason: str, spans: int) -> None:
        for counter in self._counters:
            counter(reason, spans)

    def instrument_app(self, app: Flask) -> None:
        """Trace every request of `app` (a `traceparent` from the client is continued)."""
        plain = app.wsgi_app
        _instrument_flask(app, self.provider)
        # The request span must be current before the shared steps (rate limit on Redis)
        # run, so that their calls are its children: its hook goes first. Both of its
        # hooks stand aside for requests HeadSampler sent past the instrumentation.
        hooks = app.before_request_funcs.setdefault(None, [])
        hooks.insert(0, _unless_untraced(hooks.pop()))
        teardowns = app.teardown_request_funcs.setdefault(None, [])
        teardowns.append(_unless_untraced(teardowns.pop()))
        excluded = (
            os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS")
            or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
            or DEFAULT_EXCLUDED_URLS
        )
        app.wsgi_app = HeadSampler(  # type: ignore[method-assign]
            plain, app.wsgi_app, (self.sampler, self.root_sampler), excluded
        )
        dropped = get_metrics(app, "shared.tracing").counter(
            "trace_spans_dropped_total", "Spans not exported (collector unreachable or slow)", ("reason",)
        )
        self._counters.append(lambda reason, spans: dropped.labels(reason=reason).inc(spans))

    def flush(self) -> None:
        """Export what is queued (graceful shutdown of a worker)."""
        self.provider.force_flush(timeout_millis=5000)

    def span(
        self, name: str, parent: str | None, links: Sequence[str], kind: str, attributes: Attributes | None
    ) -> contextlib.AbstractContextManager[_Span]:
        """See `shared.tracing.span`."""
        # Inside a dropped trace a child would be dropped too: no generator, no context
        # change (nine requests in ten at a ratio of 10 % pass here).
        dropped = _DROPPED.get()
        if parent is None and dropped is not None:
            return dropped
        current = trace.get_current_span()
        if parent is None and not current.is_recording() and current.get_span_context().is_valid:
            return contextlib.nullcontext(_Span(current))
        return _Recorded(self.tracer, name, parent, links, _KINDS[kind], attributes)

    def start_span(self, name: str, parent: str | None, kind: str, attributes: Attributes | None) -> _Span:
        """See `shared.tracing.start_span`."""
        dropped = _DROPPED.get()
        if parent is None and dropped is not None:
            return dropped.enter_result
        current = trace.get_current_span()
        if parent is None and not current.is_recording() and current.get_span_context().is_valid:
            return _Span(current)  # inside a dropped trace (its end() does nothing)
        started = self.tracer.start_span(
            name, context=context_of(parent), kind=_KINDS[kind], attributes=attributes
        )
        return _Span(started)

    def current_traceparent(self) -> str | None:
        """See `shared.tracing.current_traceparent`."""
        return traceparent_of(trace.get_current_span().get_span_context())

    def current_ids(self) -> tuple[str, str] | None:
        """See `shared.tracing.current_ids`."""
        ctx = trace.get_current_span().get_span_context()
        return (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") if ctx.is_valid else None

    def quiet(self) -> contextlib.AbstractContextManager[None]:
        """See `shared.tracing.quiet`."""
        return suppress_instrumentation()


class _Recorded:
    """A new span (sampled or not by the sampler), current for the block.

    A class, not a generator context manager: a sampled request opens one per manual span
    (the rate-limit script, COPY), and a generator's frame and `next` calls cost twice as much.
    """

    __slots__ = ("_attributes", "_kind", "_links", "_live", "_name", "_parent", "_span", "_token", "_tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        parent: str | None,
        links: Sequence[str],
        kind: SpanKind,
        attributes: Attributes | None,
    ) -> None:
        self._tracer, self._name, self._parent, self._links = tracer, name, parent, links
        self._kind, self._attributes = kind, attributes

    def __enter__(self) -> _Span:
        # A parent from another process starts from an empty context: instrumentation
        # quieted around the caller (a background loop) is live again inside this span.
        base = context_of(self._parent)
        links = _links(self._links) if self._links else None
        started = self._tracer.start_span(
            self._name, context=base, kind=self._kind, attributes=self._attributes, links=links
        )
        self._span = started
        self._token = otel_context.attach(trace.set_span_in_context(started, base))
        self._live = _DROPPED.set(None)  # a span with a parent of its own inside a dropped request
        return _Span(started)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any) -> None:
        started = self._span
        if exc is not None:
            started.record_exception(exc)
            started.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        _DROPPED.reset(self._live)
        otel_context.detach(self._token)
        started.end()


_SAMPLED_HERE: contextvars.ContextVar[bool] = contextvars.ContextVar("sardag_head_sampled", default=False)
# HeadSampler served the request past the instrumentation (a dropped or an excluded one).
# Outside its call (a streamed answer's teardown) this reads False: the instrumentation's
# teardown then finds no span of its own in the environ and does nothing.
_UNTRACED: contextvars.ContextVar[bool] = contextvars.ContextVar("sardag_untraced", default=False)
# The span of the dropped request being served, which manual spans in it stand for (made
# once per request as the context manager they return).
_DROPPED: contextvars.ContextVar[contextlib.nullcontext[_Span] | None] = contextvars.ContextVar(
    "sardag_dropped", default=None
)


class HeadSampled(samplers.Sampler):
    """The configured sampler, except for a request HeadSampler already chose: its root is kept."""

    def __init__(self, sampler: samplers.Sampler) -> None:
        self.sampler = sampler

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> samplers.SamplingResult:
        """RECORD_AND_SAMPLE for a chosen request's root span; else the configured decision."""
        if _SAMPLED_HERE.get() and not trace.get_current_span(parent_context).get_span_context().is_valid:
            return samplers.SamplingResult(samplers.Decision.RECORD_AND_SAMPLE, attributes)
        return self.sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        """The configured sampler's description."""
        return self.sampler.get_description()


class HeadSampler:
    """WSGI: decide sampling first; only sampled requests pay for the Flask instrumentation.

    The instrumentation builds a request's attributes (URLs, headers) and its span before
    asking the sampler, for every request: most of its cost, and at a ratio of 10 % spent
    nine times in ten for nothing. Here the configured sampler decides from the
    `traceparent` (or a fresh trace id) first. A request it keeps goes through the
    instrumentation; one it drops runs under a non-recording span of the same trace (its
    log line, SQL comment and outgoing calls still carry the trace id, flagged unsampled);
    an excluded path (OTEL_PYTHON_FLASK_EXCLUDED_URLS, matched on the path: probes and
    scrapes) runs with instrumentation suppressed, so its Redis or SQL calls make no traces.
    """

    def __init__(
        self, plain: Any, instrumented: Any, samplers_: tuple[samplers.Sampler, samplers.Sampler], excluded: str
    ) -> None:
        self.plain = plain
        self.instrumented = instrumented
        # The configured sampler, and the one it defers to for a trace without a parent
        # (itself, unless parent-based): a request without a traceparent asks the latter
        # directly, as the former would, without looking for a parent in the context.
        self.sampler, self.root = samplers_
        self.excluded = parse_excluded_urls(excluded)
        self.ids = RandomIdGenerator()
        self.suppressed = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, otel_context.Context())

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.excluded.url_disabled(environ.get("PATH_INFO", "")):
            return self._untraced(environ, start_response, self.suppressed)
        if "HTTP_TRACEPARENT" in environ:
            return self._continued(environ, start_response)
        trace_id = self.ids.generate_trace_id()
        if self.root.should_sample(None, trace_id, "request", SpanKind.SERVER).decision.is_sampled():
            return self._sampled(environ, start_response)
        return self._dropped(environ, start_response, trace_id, None, None)

    def _continued(self, environ: dict[str, Any], start_response: Any) -> Any:
        """A request with a `traceparent`: the configured sampler decides on its parent."""
        parent = _PROPAGATOR.extract(environ, getter=wsgi_getter)
        given = trace.get_current_span(parent).get_span_context()
        trace_id = given.trace_id if given.is_valid else self.ids.generate_trace_id()
        decision = self.sampler.should_sample(parent, trace_id, "request", SpanKind.SERVER)
        if decision.decision.is_sampled():
            return self._sampled(environ, start_response)
        state = given.trace_state if given.is_valid else None
        return self._dropped(environ, start_response, trace_id, state, parent)

    def _sampled(self, environ: dict[str, Any], start_response: Any) -> Any:
        token = _SAMPLED_HERE.set(True)
        try:
            return self.instrumented(environ, start_response)
        finally:
            _SAMPLED_HERE.reset(token)

    def _dropped(
        self,
        environ: dict[str, Any],
        start_response: Any,
        trace_id: int,
        state: trace.TraceState | None,
        parent: otel_context.Context | None,
    ) -> Any:
        span = trace.NonRecordingSpan(
            trace.SpanContext(trace_id, self.ids.generate_span_id(), False, trace.TraceFlags(0), state)
        )
        # Its SQL, Redis and HTTP calls would only make dropped spans: the instrumentations
        # stand aside (their fast path), the log line still gets the trace id.
        if parent is None:
            unsampled = trace.set_span_in_context(span, self.suppressed)
        else:
            unsampled = otel_context.set_value(
                _SUPPRESS_INSTRUMENTATION_KEY, True, trace.set_span_in_context(span, parent)
            )
        dropped = _DROPPED.set(contextlib.nullcontext(_Span(span)))
        try:
            return self._untraced(environ, start_response, unsampled)
        finally:
            _DROPPED.reset(dropped)

    def _untraced(self, environ: dict[str, Any], start_response: Any, ctx: otel_context.Context) -> Any:
        untraced = _UNTRACED.set(True)
        token = otel_context.attach(ctx)
        try:
            return self.plain(environ, start_response)
        finally:
            otel_context.detach(token)
            _UNTRACED.reset(untraced)


def _instrument_flask(app: Flask, provider: TracerProvider) -> None:
    """The Flask instrumentation on `app`, without its own excluded-URL list (see below)."""
    # HeadSampler applies the excluded URLs before a request reaches the instrumentation.
    # The instrumentation's own list (from the same variables) would match nothing more,
    # but an ExcludeList object is always true, so each kept request would build its full
    # URL (werkzeug's request.url, 20-40 us) for three checks: the list is read from this
    # module global when instrument_app is not given one of its own.
    module = sys.modules[FlaskInstrumentor.__module__]
    own = getattr(module, "_excluded_urls_from_env", None)
    setattr(module, "_excluded_urls_from_env", None)  # noqa: B010 (a private global, set on purpose)
    try:
        # enable_commenter=False: the Flask tags (framework, controller, route) would join
        # the psycopg2 comment, which carries only the traceparent (_instrument_libraries),
        # and cost a context and a dict per request.
        FlaskInstrumentor().instrument_app(app, tracer_provider=provider, enable_commenter=False)
    finally:
        setattr(module, "_excluded_urls_from_env", own)  # noqa: B010


def _unless_untraced(hook: Callable[..., Any]) -> Callable[..., Any]:
    """`hook` (one of the Flask instrumentation's), skipped for requests HeadSampler did not keep."""

    @functools.wraps(hook)
    def run(*args: Any) -> Any:
        return None if _UNTRACED.get() else hook(*args)

    return run


def _links(traceparents: Sequence[str]) -> list[Link]:
    found = []
    for traceparent in traceparents:
        ctx = context_of(traceparent)
        if ctx is not None:
            found.append(Link(trace.get_current_span(ctx).get_span_context()))
    return found


def make_samplers(settings: TracingSettings) -> tuple[samplers.Sampler, samplers.Sampler]:
    """The sampler OTEL_TRACES_SAMPLER / _ARG name (validated by shared.config), and the one
    it uses for a trace without a parent (its root sampler when parent-based, else itself)."""
    ratio = 1.0 if settings.sampler_arg is None else settings.sampler_arg
    root = {
        "always_on": lambda: samplers.ALWAYS_ON,
        "always_off": lambda: samplers.ALWAYS_OFF,
        "traceidratio": lambda: samplers.TraceIdRatioBased(ratio),
    }[settings.sampler.removeprefix("parentbased_")]()
    return (samplers.ParentBased(root) if settings.sampler.startswith("parentbased_") else root), root


def _instrument_libraries() -> None:
    """psycopg2 (with the trace context as a SQL comment), redis, requests: those installed."""
    if importlib.util.find_spec("psycopg2") is not None:
        from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

        # Only the traceparent in the comment: pg_stat_activity and the slow-query log lead
        # to the trace; driver versions there would only lengthen every statement.
        only_traceparent = {
            "db_driver": False,
            "dbapi_threadsafety": False,
            "dbapi_level": False,
            "libpq_version": False,
            "driver_paramstyle": False,
            "opentelemetry_values": True,
        }
        Psycopg2Instrumentor().instrument(enable_commenter=True, commenter_options=only_traceparent)
    if importlib.util.find_spec("redis") is not None:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()
    if importlib.util.find_spec("requests") is not None:
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        RequestsInstrumentor().instrument()


def _tag_sentry_events() -> None:
    """Every Sentry event gets the trace id (a tag, searchable) and span id of its span."""
    try:
        from sentry_sdk.scope import add_global_event_processor
    except ImportError:
        return

    def add_trace(event: Any, _hint: Any) -> Any:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event.setdefault("tags", {})["trace_id"] = f"{ctx.trace_id:032x}"
            event.setdefault("contexts", {})["otel"] = {
                "trace_id": f"{ctx.trace_id:032x}",
                "span_id": f"{ctx.span_id:016x}",
            }
        return event

    add_global_event_processor(add_trace)


def start(settings: TracingSettings) -> Backend:
    """The backend of this process, started on first use (in each worker, after its fork)."""
    global _backend
    with _lock:
        backend = _backend
        if backend is None:
            backend = _backend = Backend(settings)
            log.info(
                "tracing on: %s as %s, sampler %s%s",
                settings.endpoint,
                settings.service_name,
                settings.sampler,
                "" if settings.sampler_arg is None else f" ({settings.sampler_arg})",
            )
        return backend
