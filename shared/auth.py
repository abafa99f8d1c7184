"""API-key protection for write endpoints: several keys at once, re-read on change.

Accepted keys are the union of `API_KEY`, `API_KEYS` (comma-separated) and the lines of
`API_KEYS_FILE` (blank lines and `#` comments ignored). Any of them configured makes keys
required. The file is checked on every authenticated request (one `stat`) and re-read
when it changed, so adding or retiring a key takes effect at once in every worker and
instance that reads it, with no restart (see docs/security.md, "Rotating API keys").
A file that cannot be read contributes no key: writes fail closed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import Flask, current_app, request

from shared.errors import APIError
from shared.secrets import MIN_KEY_LENGTH, Secrets, app_secrets, key_file_keys

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "sardag_api_keys"
log = logging.getLogger("shared.auth")


def _digest(key: str) -> bytes:
    # Equal-length digests: compare_digest then takes the same time whatever the key's length.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The accepted keys of one app, compared in constant time."""

    def __init__(self, static: Iterable[str], path: str | None, secrets: Secrets | None = None) -> None:
        self._static = frozenset(_digest(k) for k in static if k)
        self.path = path
        self._secrets = secrets
        self._lock = threading.Lock()
        self._file_state: tuple[int, int, int] | None = (-1, -1, -1)  # unread: read on first use
        self._from_file: frozenset[bytes] = frozenset()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], secrets: Secrets | None = None) -> ApiKeys:
        """Keys from `API_KEY`, `API_KEYS` and `API_KEYS_FILE`."""
        static = [str(config.get("API_KEY") or ""), *config.get("API_KEYS", ())]
        return cls(static, config.get("API_KEYS_FILE"), secrets)

    @property
    def required(self) -> bool:
        """True when any key source is configured."""
        return bool(self._static) or self.path is not None

    def accepts(self, given: str) -> bool:
        """Whether `given` is one of the keys valid now; every key is compared, no early exit."""
        presented = _digest(given)
        matched = False
        for expected in self._static | self._file_keys():
            matched |= hmac.compare_digest(presented, expected)
        return matched

    def _file_keys(self) -> frozenset[bytes]:
        if self.path is None:
            return frozenset()
        try:
            info = os.stat(self.path)
            state = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            state = None
        if state != self._file_state:
            self._reload(state)
        return self._from_file

    def _reload(self, state: tuple[int, int, int] | None) -> None:
        with self._lock:
            if state == self._file_state:
                return  # another thread got here first
            keys = _read_key_file(str(self.path))
            if self._secrets is not None:  # a refused short key is masked too: it may be a real one
                self._secrets.add(keys)
            keys = _long_enough(keys, str(self.path))
            self._from_file, self._file_state = frozenset(_digest(k) for k in keys), state
        log.info("api keys file %s read: %d keys", self.path, len(keys))


def _read_key_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            keys = key_file_keys(handle.read())
    except (OSError, UnicodeDecodeError) as exc:
        log.error("api keys file %s unreadable (%s): no key from it is accepted", path, type(exc).__name__)
        return []
    return keys


def _long_enough(keys: list[str], path: str) -> list[str]:
    """The keys of MIN_KEY_LENGTH characters or more; the others are refused, with one log line."""
    accepted = [key for key in keys if len(key) >= MIN_KEY_LENGTH]
    if len(accepted) < len(keys):
        refused = len(keys) - len(accepted)
        log.error("api keys file %s: %d keys shorter than %d characters refused", path, refused, MIN_KEY_LENGTH)
    return accepted


def init_app(app: Flask) -> ApiKeys:
    """The app's key set, built once from its configuration."""
    keys: ApiKeys | None = app.extensions.get(EXTENSION)
    if keys is None:
        keys = app.extensions[EXTENSION] = ApiKeys.from_config(app.config, app_secrets(app))
    return keys


def api_keys(app: Flask | None = None) -> ApiKeys:
    """The key set of `app` (default: the current app)."""
    return init_app(app or current_app)


def presented_key() -> str | None:
    """The key the client sent in `X-API-Key` or `Authorization: Bearer`."""
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require_api_key(view: F) -> F:
    """Answer 401 unless the request carries an accepted key (when any key is configured)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        keys = api_keys()
        if keys.required and not keys.accepts(presented_key() or ""):
            raise APIError("unauthorized", "A valid API key is required (X-API-Key).", 401)
        return view(*args, **kwargs)

    wrapper.requires_api_key = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
