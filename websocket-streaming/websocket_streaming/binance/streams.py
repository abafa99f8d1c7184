"""Binance combined-stream URLs: built from symbols and kinds within Binance's limits; read back."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

MAX_URL_BYTES = 8000  # Binance's reported limit on a combined-stream URL is ~8 KB
MAX_STREAMS = 1024


def stream_names(symbols: tuple[str, ...], kinds: tuple[str, ...]) -> list[str]:
    """Combined-stream names: lowercase symbol, `@`, stream kind (`btcusdt@aggTrade`)."""
    return [f"{symbol.lower()}@{kind}" for symbol in symbols for kind in kinds]


def combined_url(base: str, streams: list[str]) -> str:
    """`<base>/stream?streams=a/b/c`; raises ValueError past Binance's limits."""
    if len(streams) > MAX_STREAMS:
        raise ValueError(f"{len(streams)} streams; Binance allows {MAX_STREAMS} per connection")
    url = f"{base.rstrip('/')}/stream?streams=" + quote("/".join(streams), safe="/@!_")
    if len(url.encode()) > MAX_URL_BYTES:
        raise ValueError(f"combined-stream URL is {len(url)} bytes; keep it under 8 KB")
    return url


def host_of(url: str) -> str:
    """`host:port` of a URL: never its user name or password."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "wss" else 80
    return f"{parts.hostname or ''}:{parts.port or default}"


def stream_count(url: str) -> int:
    """How many streams a combined-stream URL names."""
    raw = parse_qs(urlsplit(url).query).get("streams", [""])[0]
    return len([s for s in raw.split("/") if s])
