"""A thread that looks at something on a fixed beat, for the cues and the fault watch."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Periodic:
    """Calls `tick(now)` every `interval` seconds on a daemon thread until `close()`.

    An exception in one tick is logged and the next tick runs as usual: a failed
    sensor read must not end the reminders or the watch.
    """

    def __init__(self, name: str, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def stuck_s(self) -> float:
        """Seconds since the last tick beyond its interval: 0 while it keeps its beat."""
        return max(0.0, time.monotonic() - self._last_tick - self._interval)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._last_tick = now = time.monotonic()
            try:
                self.tick(now)
            except Exception:
                log.exception("%s", self._thread.name)
