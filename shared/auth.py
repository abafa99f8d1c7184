"""API-key protection for write endpoints."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request

from shared.errors import APIError

F = TypeVar("F", bound=Callable[..., Any])


def presented_key() -> str | None:
    """The key the client sent in `X-API-Key` or `Authorization: Bearer`."""
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require_api_key(view: F) -> F:
    """Answer 401 unless the request carries the configured `API_KEY` (when one is set)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        expected = current_app.config.get("API_KEY")
        if expected:
            given = presented_key() or ""
            if not hmac.compare_digest(given.encode(), str(expected).encode()):
                raise APIError("unauthorized", "A valid API key is required (X-API-Key).", 401)
        return view(*args, **kwargs)

    wrapper.requires_api_key = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
