"""One JSON error shape for every non-2xx response, and the handlers that produce it."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("shared.errors")

# Werkzeug status -> our machine code; statuses not listed keep a generic name.
HTTP_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

MESSAGES: dict[int, str] = {
    404: "The requested URL was not found.",
    405: "The method is not allowed for the requested URL.",
    413: "The request body is larger than 1 MiB.",
    415: "The request body must be JSON (Content-Type: application/json).",
    500: "The server hit an unexpected error; it has been reported.",
}


class APIError(Exception):
    """An error answered to the client as `{"error", "message", "details"?}`."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        details: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = list(details) if details else None
        self.headers = dict(headers or {})


def error_response(
    code: str,
    message: str,
    status: int,
    details: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build the JSON error response."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = list(details)
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def validation_error(details: Sequence[Mapping[str, Any]], message: str | None = None) -> APIError:
    """A 400 `validation_error` listing each bad field."""
    text = message or "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return APIError("validation_error", text or "invalid request", 400, details)


def unknown_parameter_message(allowed: Collection[str]) -> str:
    """The one wording, in every service, for a query parameter an operation does not take."""
    if not allowed:
        return "is not a parameter of this operation, which takes none"
    return "is not a parameter of this operation, which takes " + ", ".join(sorted(allowed))


def refuse_unknown_parameters(allowed: Collection[str] = ()) -> None:
    """Raise the 400 `validation_error` naming each query parameter not in `allowed`.

    A misspelt filter (`?symbl=BTCUSDT`) silently ignored would answer a question the
    client did not ask; any route calls this first.
    """
    unknown = [name for name in request.args if name not in allowed]
    if unknown:
        message = unknown_parameter_message(allowed)
        raise validation_error([{"field": name, "message": message} for name in unknown])


def unavailable(message: str, retry_after: int = 1) -> APIError:
    """A 503 `unavailable` with a `Retry-After` header."""
    return APIError("unavailable", message, 503, headers={"Retry-After": str(max(1, retry_after))})


def not_found(message: str) -> APIError:
    """A 404 `not_found`."""
    return APIError("not_found", message, 404)


def init_app(app: Flask) -> None:
    """Register handlers so every error, expected or not, leaves as the JSON shape."""
    app.register_error_handler(APIError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)


def _handle_api_error(error: APIError) -> Response:
    return error_response(error.code, error.message, error.status, error.details, error.headers)


def _handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = HTTP_CODES.get(status, "http_error")
    if status == 400 and "JSON" in (error.description or ""):
        code = "invalid_json"
    message = MESSAGES.get(status) or error.description or error.name
    headers = {k: v for k, v in error.get_headers() if k.lower() in {"allow", "retry-after"}}
    return error_response(code, message, status, headers=headers)


def _handle_unexpected(error: Exception) -> Response:
    from shared.sentry_integration import capture_exception

    log.exception("unhandled exception", exc_info=error)
    capture_exception(error)
    return error_response("internal_error", MESSAGES[500], 500)
