"""Prometheus metrics: per-request count and latency by URL rule, plus service metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, current_app, g, request
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

EXTENSION = "sardag_metrics"
PREFIX = "sardag_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class ServiceMetric:
    """A metric whose `service` label is bound once, so callers never pass it."""

    def __init__(self, metric: Any, service: str, labelled: bool) -> None:
        self._metric = metric
        self._service = service
        self._labelled = labelled

    def labels(self, **labels: str) -> Any:
        """The child for these labels (service added)."""
        return self._metric.labels(service=self._service, **labels)

    def __getattr__(self, name: str) -> Any:
        if self._labelled:
            raise AttributeError(f"{name}: call .labels(...) first on a labelled metric")
        return getattr(self._metric.labels(service=self._service), name)


class Metrics:
    """Flask extension owning one registry per app; multiprocess-aware exposition."""

    def __init__(self, app: Flask | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.service = "app"
        self.multiprocess_dir: str | None = None
        self._created: dict[str, ServiceMetric] = {}
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
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
        app.before_request(_start_timer)
        app.after_request(_record_request)
        app.add_url_rule("/metrics", "metrics", self.expose, methods=["GET"])

    def counter(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> ServiceMetric:
        """Create (or return the existing) counter in this app's registry."""
        return self._get_or_create(
            name,
            lambda: Counter(_name(name), doc, ("service", *labelnames), registry=self.registry),
            labelnames,
        )

    def _get_or_create(self, name: str, factory: Any, labelnames: Sequence[str]) -> ServiceMetric:
        if name not in self._created:
            self._created[name] = ServiceMetric(factory(), self.service, bool(labelnames))
        return self._created[name]

    def gauge(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str] = (),
        multiprocess_mode: str = "livemax",
    ) -> ServiceMetric:
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
    ) -> ServiceMetric:
        """Create a histogram in this app's registry."""
        return self._get_or_create(
            name,
            lambda: Histogram(
                _name(name), doc, ("service", *labelnames), buckets=buckets, registry=self.registry
            ),
            labelnames,
        )

    def observe_request(self, method: str, rule: str, status: int, seconds: float | None) -> None:
        """Count one request and record its latency (label children cached: hot path)."""
        children = self._request_children.get((method, rule, status))
        if children is None:
            children = (
                self.requests.labels(method=method, rule=rule, status=str(status)),
                self.latency.labels(method=method, rule=rule),
            )
            self._request_children[(method, rule, status)] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def expose(self) -> Response:
        """Serve the Prometheus text format (all workers' values in multiprocess mode)."""
        registry = self.registry
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _name(name: str) -> str:
    return name if name.startswith(PREFIX) else PREFIX + name


def get_metrics(app: Flask | None = None) -> Metrics:
    """The metrics extension of `app` (default: the current app)."""
    return (app or current_app).extensions[EXTENSION]


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _record_request(response: Response) -> Response:
    req = request._get_current_object()  # one context lookup for the three reads
    url_rule = req.url_rule
    rule = url_rule.rule if url_rule is not None else "<unmatched>"
    method = req.method if req.method in _KNOWN_METHODS else "OTHER"
    started = g.get("metrics_started")
    elapsed = None if started is None else time.perf_counter() - started
    get_metrics().observe_request(method, rule, response.status_code, elapsed)
    return response
