"""Binance combined-stream URLs: the host they name (never credentials) and their stream count."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit


def host_of(url: str) -> str:
    """`host:port` of a URL: never its user name or password."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "wss" else 80
    return f"{parts.hostname or ''}:{parts.port or default}"


def stream_count(url: str) -> int:
    """How many streams a combined-stream URL names."""
    raw = parse_qs(urlsplit(url).query).get("streams", [""])[0]
    return len([s for s in raw.split("/") if s])
