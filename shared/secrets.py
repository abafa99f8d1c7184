"""Secret masking, in one place: which settings are secret, and how text and URLs are masked.

One `Secrets` per process, held by every sink: the log handler's formatter, Sentry's
`before_send`, `/health` and `/readyz` (through `app_secrets`); the API-key loader adds every
key it reads, so a key loaded at run time is masked from then on (and stays masked after it
is retired). `secret_values` is what a configuration adds to it; `redacted` is the
configuration as the config command prints it, masked by the same values; `mask_url` masks
one URL and `url_secrets` lists the secrets inside one. The password of every URL setting
is a secret, the Binance URLs' too (a proxy in front of them may take basic auth).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

if TYPE_CHECKING:
    from flask import Flask

EXTENSION = "sardag_secrets"  # app.extensions key of the process's Secrets (set by shared.logger)
MASK = "***"
MIN_MASKED_LENGTH = 4  # shorter "secrets" would mask ordinary words; docs/security.md says so
MIN_KEY_LENGTH = 16  # an API key shorter than this is refused (guessable, and short text masks words)
# URLs whose password part is a secret (a trace collector may take basic auth in its URL).
SECRET_URLS = (
    "DATABASE_URL",
    "DATABASE_READ_URL",
    "REDIS_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "BINANCE_WS_URL",
    "BINANCE_REST_URL",
)
# Header settings (`key=value,...`) whose values are secrets: a collector's auth token.
SECRET_HEADERS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
SECRET_NAMES = ("API_KEY", "API_KEYS", "SENTRY_DSN", *SECRET_URLS, *SECRET_HEADERS)
URL_NAMES = (*SECRET_URLS, "SENTRY_DSN")
PASSWORD_PARAMS = frozenset({"password"})  # query parameters that carry a password (libpq, redis-py)
_URL_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]+@")


class Secrets:
    """A growing set of secret strings and the masking of text and nested data by them."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Mask `values` from now on (each as written and as it appears inside JSON text)."""
        forms = set(self._forms)
        for value in values:
            if len(value) >= MIN_MASKED_LENGTH:
                forms.update({value, json.dumps(value)[1:-1]})
        with self._lock:  # longest first: a secret containing another is masked whole
            self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def mask(self, text: str) -> str:
        """`text` with every secret replaced by `***`."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def mask_deep(self, value: Any) -> Any:
        """`value` (JSON-like: dicts, lists, strings) with every string masked, keys too."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_deep(k): self.mask_deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_deep(v) for v in value]
        return value


def app_secrets(app: Flask) -> Secrets:
    """The secrets everything `app` writes out is masked with (empty before logging is set up)."""
    found = app.extensions.get(EXTENSION)
    return found if isinstance(found, Secrets) else Secrets()


def url_secrets(url: str | None) -> set[str]:
    """The secrets in `url`: its password and every `password=` query value, as written and decoded."""
    if not url:
        return set()
    parts = urlsplit(url)
    found = {parts.password or ""}
    for pair in parts.query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and unquote_plus(name).lower() in PASSWORD_PARAMS:
            found.add(value)
    found |= {unquote(v) for v in found} | {unquote_plus(v) for v in found}
    return {value for value in found if value}


def mask_url(url: str) -> str:
    """`url` with its password and every `password=` query value replaced by `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hosts}"
    query = "&".join(_mask_param(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_param(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}={MASK}" if sep and unquote_plus(name).lower() in PASSWORD_PARAMS else pair


def mask_url_secrets(text: str, url: str) -> str:
    """`text` (a driver's message) with every secret of `url` replaced by `***`, however short."""
    for form in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def strip_url_credentials(text: str) -> str:
    """`text` with the user name and password taken out of any URL in it (secrets not known)."""
    return _URL_CREDENTIALS.sub("", text)


def secret_values(config: Mapping[str, Any]) -> set[str]:
    """Every secret string in `config`: API keys, URL passwords (as written and decoded), the DSN,
    the values of the OTLP exporter's headers."""
    found = {str(config.get("API_KEY") or ""), *config.get("API_KEYS", ())}
    for name in URL_NAMES:
        found |= url_secrets(config.get(name))
    for name in SECRET_HEADERS:
        found.update(str(v) for v in dict(config.get(name) or {}).values())
    dsn = str(config.get("SENTRY_DSN") or "")
    found.update({dsn, urlsplit(dsn).username or ""})  # a DSN's user part is its key
    return {value for value in found if value}


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `config` safe to print: secret settings masked, URLs with their passwords
    masked, and every secret value masked wherever else it appears (as in the logs)."""
    secrets = Secrets(secret_values(config))
    safe = {}
    for name, value in config.items():
        if value and name in SECRET_NAMES:
            value = mask_url(str(value)) if name in SECRET_URLS else MASK
        safe[name] = secrets.mask(value) if isinstance(value, str) else value
    return safe


def key_file_keys(text: str) -> list[str]:
    """The keys in the text of an API_KEYS_FILE: one a line, blank lines and `#` comments ignored."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]
