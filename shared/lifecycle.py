"""What an app's extensions need from each other: set-up order, and shutdown callbacks.

Kept apart from `shared.app` so every extension can use it without importing the app
factory (which imports every extension).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from flask import Flask

SHUTDOWN_EXTENSION = "sardag_shutdown"
log = logging.getLogger("shared.lifecycle")
T = TypeVar("T")


class ExtensionOrderError(RuntimeError):
    """An extension was set up before one it needs (e.g. the cache before the metrics)."""


def required(app: Flask, key: str, kind: type[T], user: str) -> T:
    """`app.extensions[key]`, a `kind`; or an error saying that `user` needs it set up first."""
    found = app.extensions.get(key)
    if isinstance(found, kind):
        return found
    provider = kind.__name__
    raise ExtensionOrderError(
        f"{user} needs {provider} on app {app.name!r}: call {provider}(app) before {user}(app) "
        "(shared.app.create_base_app sets them up in order)"
    )


def on_shutdown(app: Flask, callback: Callable[[], None]) -> None:
    """Run `callback` when the worker serving `app` exits (pool close, upstream close)."""
    app.extensions.setdefault(SHUTDOWN_EXTENSION, []).append(callback)


def shutdown(app: Flask) -> None:
    """Run the shutdown callbacks, newest first; one failing does not stop the others."""
    for callback in reversed(app.extensions.get(SHUTDOWN_EXTENSION, [])):
        try:
            callback()
        except Exception:
            log.exception("shutdown callback %r failed", callback)
