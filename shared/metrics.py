"""Prometheus metrics: per-request count and latency by URL rule, plus service metrics."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

from flask import Flask, Request, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from shared.lifecycle import on_shutdown, required
from shared.request_pipeline import RequestState, elapsed_seconds, get_pipeline

EXTENSION = "sardag_metrics"
log = logging.getLogger("shared.metrics")
PREFIX = "sardag_"
# 0.2: the p99 latency target (deploy/prometheus/rules), so the alert's quantile is exact there.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_SECONDS = 1.0  # longest a worker's request counts wait before /metrics can see them
MultiprocessMode = Literal[
    "all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"
]
_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


M = TypeVar("M", Counter, Gauge, Histogram)


class ServiceMetric(Generic[M]):
    """A metric whose `service` label is bound once, so callers never pass it."""

    def __init__(self, metric: M, service: str, labelled: bool) -> None:
        self._metric: M = metric
        self._service = service
        self._labelled = labelled

    def labels(self, **labels: str) -> M:
        """The child for these labels (service added)."""
        child: M = self._metric.labels(service=self._service, **labels)
        return child

    def __getattr__(self, name: str) -> Any:
        if self._labelled:
            raise AttributeError(f"{name}: call .labels(...) first on a labelled metric")
        return getattr(self._metric.labels(service=self._service), name)


class RequestTally:
    """Request counts and latencies held in plain Python until `flush()` records them.

    Recording each request straight into the Prometheus metrics costs three locked writes
    to the multiprocess files, a tenth of a small route's time in a worker; appending to a
    list costs a few per cent of that. A daemon thread of the recording process flushes
    every `interval` seconds, and `/metrics` flushes its own process before answering.
    """

    def __init__(self, metrics: Metrics, interval: float = FLUSH_SECONDS) -> None:
        self._metrics = metrics
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, int], list[float | None]] = {}
        self._flusher_pid = 0

    def add(self, method: str, rule: str, status: int, seconds: float | None) -> None:
        """Count one request (its latency, when known)."""
        with self._lock:
            found = self._pending.get((method, rule, status))
            if found is None:
                found = self._pending[(method, rule, status)] = []
            found.append(seconds)
        if self._flusher_pid != os.getpid():  # first request of this process (after a fork)
            self._start_flusher()

    def flush(self) -> None:
        """Record everything counted so far into the Prometheus metrics."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (method, rule, status), latencies in pending.items():
            self._metrics.observe_request(method, rule, status, latencies)

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        tally = weakref.ref(self)  # the thread ends when the app (and its tally) is gone
        threading.Thread(target=_flush_forever, args=(tally, self._interval), daemon=True).start()


def _flush_forever(tally: weakref.ref[RequestTally], interval: float) -> None:
    while True:
        time.sleep(interval)
        current = tally()
        if current is None:
            return
        try:
            current.flush()
        except Exception:  # counted requests are lost, the thread is not: say so and go on
            log.exception("could not record request metrics")
        del current


class Metrics:
    """Flask extension owning one registry per app; multiprocess-aware exposition."""

    def __init__(self, app: Flask | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.service = "app"
        self.multiprocess_dir: str | None = None
        self._created: dict[str, ServiceMetric[Any]] = {}
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._before_expose: list[Callable[[], object]] = []
        self.tally = RequestTally(self)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create the request metrics, hook them in, and add `/metrics`."""
        self.service = app.config.get("SERVICE_NAME", app.name)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if not self.multiprocess_dir:
            ProcessCollector(registry=self.registry)
        self.requests = self.counter("http_requests_total", "HTTP requests", ("method", "rule", "status"))
        self.latency = self.histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ("method", "rule"),
            LATENCY_BUCKETS,
        )
        app.extensions[EXTENSION] = self
        get_pipeline(app).add(after=self._record_request)
        on_shutdown(app, self.tally.flush)
        app.add_url_rule("/metrics", "metrics", self.expose, methods=["GET"])

    def counter(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> ServiceMetric[Counter]:
        """Create (or return the existing) counter in this app's registry."""
        return self._get_or_create(
            name,
            lambda: Counter(_name(name), doc, ("service", *labelnames), registry=self.registry),
            labelnames,
        )

    def _get_or_create(
        self, name: str, factory: Callable[[], M], labelnames: Sequence[str]
    ) -> ServiceMetric[M]:
        if name not in self._created:
            self._created[name] = ServiceMetric(factory(), self.service, bool(labelnames))
        found: ServiceMetric[M] = self._created[name]
        return found

    def gauge(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str] = (),
        multiprocess_mode: MultiprocessMode = "livemax",
    ) -> ServiceMetric[Gauge]:
        """Create a gauge; across gunicorn workers the live processes' maximum is reported."""
        return self._get_or_create(
            name,
            lambda: Gauge(
                _name(name),
                doc,
                ("service", *labelnames),
                registry=self.registry,
                multiprocess_mode=multiprocess_mode,
            ),
            labelnames,
        )

    def histogram(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> ServiceMetric[Histogram]:
        """Create a histogram in this app's registry."""
        return self._get_or_create(
            name,
            lambda: Histogram(
                _name(name), doc, ("service", *labelnames), buckets=buckets, registry=self.registry
            ),
            labelnames,
        )

    def before_expose(self, callback: Callable[[], object]) -> None:
        """Run `callback` before each `/metrics` answer (values measured at scrape time)."""
        self._before_expose.append(callback)

    def observe_request(self, method: str, rule: str, status: int, latencies: Sequence[float | None]) -> None:
        """Count requests of one kind and record their latencies (None: unknown)."""
        children = self._request_children.get((method, rule, status))
        if children is None:
            children = (
                self.requests.labels(method=method, rule=rule, status=str(status)),
                self.latency.labels(method=method, rule=rule),
            )
            self._request_children[(method, rule, status)] = children
        children[0].inc(len(latencies))
        for seconds in latencies:
            if seconds is not None:
                children[1].observe(seconds)

    def _record_request(self, req: Request, state: RequestState, response: Response) -> None:
        url_rule = req.url_rule
        rule = url_rule.rule if url_rule is not None else "<unmatched>"
        method = req.method if req.method in _KNOWN_METHODS else "OTHER"
        self.tally.add(method, rule, response.status_code, elapsed_seconds(state))

    def expose(self) -> Response:
        """Serve the Prometheus text format (all workers' values in multiprocess mode)."""
        for callback in self._before_expose:
            callback()
        self.tally.flush()
        registry = self.registry
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        # content_type, not mimetype: CONTENT_TYPE_LATEST already names its charset
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _name(name: str) -> str:
    return name if name.startswith(PREFIX) else PREFIX + name


def get_metrics(app: Flask | None = None, user: str = "get_metrics()") -> Metrics:
    """The metrics extension of `app` (default: the current app); `user` names who needs it."""
    return required(app or current_app, EXTENSION, Metrics, user)
