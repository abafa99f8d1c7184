"""One before- and one after-request hook per app, into which the shared extensions plug steps.

Flask calls every hook on its own and each hook looks `request` and `g` up again through
the context proxies. The shared base has six per-request concerns (body size, request id,
rate limit, its headers, metrics, access log); as six hooks they cost a small route a
third of its throughput on a threaded worker. Here both lookups happen once and every
step gets the resolved objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, Request, Response, g, request
from flask.ctx import _AppCtxGlobals

EXTENSION = "sardag_pipeline"
RequestState = _AppCtxGlobals  # what `g` is: per-request attributes the steps share
# (request, g); a step that returns a response ends the request there, as a before_request
# function does: the later steps and the view are skipped, the after-steps still run.
BeforeStep = Callable[[Request, RequestState], Response | None]
AfterStep = Callable[[Request, RequestState, Response], None]  # (request, g, response)


class RequestPipeline:
    """The ordered steps of one app; `g.request_started` is set before the first step."""

    def __init__(self, app: Flask) -> None:
        self.before: list[BeforeStep] = []
        self.after: list[AfterStep] = []
        app.before_request(self._run_before)
        app.after_request(self._run_after)
        app.extensions[EXTENSION] = self

    def add(self, before: BeforeStep | None = None, after: AfterStep | None = None) -> None:
        """Append steps; after-steps run in reverse order of adding, as Flask's hooks do."""
        if before is not None:
            self.before.append(before)
        if after is not None:
            self.after.insert(0, after)

    def _run_before(self) -> Response | None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        state = g._get_current_object()
        state.request_started = time.perf_counter()
        for step in self.before:
            answer = step(req, state)
            if answer is not None:
                return answer
        return None

    def _run_after(self, response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        state = g._get_current_object()
        for step in self.after:
            step(req, state, response)
        return response


def get_pipeline(app: Flask) -> RequestPipeline:
    """The pipeline of `app`, created (and hooked in) on first use."""
    found: RequestPipeline | None = app.extensions.get(EXTENSION)
    return found if found is not None else RequestPipeline(app)


def elapsed_seconds(state: RequestState) -> float | None:
    """Seconds since the pipeline started this request (None if it never did)."""
    started: float | None = getattr(state, "request_started", None)
    return None if started is None else time.perf_counter() - started
