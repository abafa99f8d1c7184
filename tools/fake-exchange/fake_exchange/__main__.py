"""Run the fake exchange: `python -m fake_exchange --port 9443`."""

from __future__ import annotations

import argparse
import signal
import threading

from .server import FakeExchange, read_frames


def main(argv: list[str] | None = None) -> None:
    """Serve the fake exchange until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Fake Binance spot exchange on loopback")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--frames", help="JSON-lines file to replay instead of a random walk")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second per stream")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    args = parser.parse_args(argv)
    frames = read_frames(args.frames) if args.frames else None
    exchange = FakeExchange(
        args.host, args.port, rate=args.rate, frames=frames, ping_interval=args.ping_interval
    )
    if args.port:  # known already: say it before the port opens, for whoever waits on the port
        announce(exchange)
    exchange.start()
    if not args.port:
        announce(exchange)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    exchange.stop()


def announce(exchange: FakeExchange) -> None:
    """Print the URLs to point the service at."""
    print(f"fake exchange: BINANCE_WS_URL={exchange.ws_url} BINANCE_REST_URL={exchange.rest_url}", flush=True)


if __name__ == "__main__":
    main()
