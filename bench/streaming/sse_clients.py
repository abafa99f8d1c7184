"""N concurrent SSE subscribers in one asyncio process; prints receive times as JSON.

Usage: python sse_clients.py <base_url> <subscribers> <events> <ready_file> [stall]
With `stall`, one more subscriber (events=price,quote) opens and never reads.
Each price event's `price` encodes the event number (price = 50000 + n); the receive time
is CLOCK_MONOTONIC, comparable with the sender's in the parent process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


async def subscriber(
    host: str, port: int, events: int, connected: asyncio.Queue[None], out: list[tuple[int, float]]
) -> None:
    """Read `events` price events from one /stream connection."""
    reader, writer = await asyncio.open_connection(host, port)
    # only the measured symbol: the benchmark keeps the feed alive with trades of another
    writer.write(f"GET /stream?symbols=ETHUSDT HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    seen = 0
    while seen < events:
        line = await reader.readline()
        if not line:
            break
        if line.startswith(b": connected"):
            connected.put_nowait(None)
        elif line.startswith(b"data: "):
            price = json.loads(line[6:])["price"]
            out.append((round(price) - 50000, time.monotonic()))
            seen += 1
    writer.close()


def stalled(host: str, port: int) -> socket.socket:
    """A subscriber to every event type that never reads (a 4 KiB receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.sendall(f"GET /stream?events=price,quote HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    return sock


async def main(base: str, count: int, events: int, ready_file: str, stall: bool = False) -> None:
    """Open every stream, signal readiness, collect, print JSON."""
    parts = urlsplit(base)
    staller = stalled(parts.hostname or "127.0.0.1", parts.port or 80) if stall else None
    connected: asyncio.Queue[None] = asyncio.Queue()
    results: list[list[tuple[int, float]]] = [[] for _ in range(count)]
    tasks = [
        asyncio.create_task(
            subscriber(parts.hostname or "127.0.0.1", parts.port or 80, events, connected, results[i])
        )
        for i in range(count)
    ]
    for _ in range(count):
        await connected.get()
    Path(ready_file).write_text("ready")
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    print(json.dumps(results))
    if staller is not None:
        staller.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["stall"]))
