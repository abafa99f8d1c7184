"""Per-stream silence: a subscribed stream that stops while the others on the feed deliver.

Binance sometimes stops one stream of a combined connection and keeps sending the rest; the
connection watchdog cannot see it (the connection is not silent). `StreamWatch` notes when
each stream last delivered; a stream silent for `silence` seconds while another delivered
in the last `LIVE_WINDOW` seconds is reported (in /health by name, counted) and healed by a
make-before-break reconnect of the lines, at most once per `silence` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable

LIVE_WINDOW = 5.0  # the feed counts as delivering if any stream did within this many seconds


class StreamWatch:
    """When each expected stream last delivered; which are silent; when to heal."""

    def __init__(self, streams: Iterable[str], silence: float) -> None:
        self.expected = tuple(streams)
        self.silence = silence
        self.seen: dict[str, float] = {}  # written by the reader thread: one dict store a frame
        self.silent: tuple[str, ...] = ()
        self.detected = 0  # streams that went silent (each time one does)
        self.heals = 0  # reconnects asked for because of a silent stream
        self._since: float | None = None  # watching since (the feed started delivering)
        self._healed_at = float("-inf")

    def start(self, now: float) -> None:
        """Watch from `now` (a new upstream): every stream gets `silence` seconds to deliver."""
        self._since = now
        self.seen.clear()
        self.silent = ()

    def stop(self) -> None:
        """Not ingesting here: nothing is silent."""
        self._since = None
        self.silent = ()

    def check(self, now: float) -> bool:
        """Update `silent`; True when the lines should be reconnected to heal it."""
        since = self._since
        if since is None:
            return False
        newest = max(self.seen.values(), default=None)
        if newest is None or now - newest > LIVE_WINDOW:  # the whole feed is quiet: the watchdog's job
            self.silent = ()
            return False
        silent = tuple(s for s in self.expected if now - self.seen.get(s, since) > self.silence)
        self.detected += len(set(silent) - set(self.silent))
        self.silent = silent
        if silent and now - self._healed_at >= self.silence:
            self._healed_at = now
            self.heals += 1
            return True
        return False
