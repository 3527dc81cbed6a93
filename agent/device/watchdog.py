"""The systemd watchdog, fed by the main loop only while the recorder is healthy.

systemd restarts the daemon when WATCHDOG=1 stops for WatchdogSec. Pings come
from the main loop, so a hung main loop stops them by itself; each beat also asks
the workers the main loop cannot see (the segment writer, syncer and sealer, the fault
watch) how long they have been stuck on one item, and withholds the ping while any
has been stuck for more than half the watchdog time. A stalled camera is not a hang:
the fault watch restarts it and seals the gap itself, and restarting the daemon
would not bring a dead sensor back.

When it withholds pings, the daemon writes a marker in the store first: the next
start, finding a recording left open, then seals the gap as `watchdog` with the
reason instead of an unexplained `power_loss_or_crash`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.device import markers
from agent.evidence.chain import utc_iso
from agent.sdnotify import Notifier

log = logging.getLogger(__name__)

MARKER = "watchdog-withheld"


class Watchdog:
    def __init__(self, notifier: Notifier, store_root: Path,
                 stalls: Callable[[], dict[str, float]]) -> None:
        self._notifier = notifier
        self._marker = store_root / MARKER
        self._stalls = stalls
        self._last_ping = 0.0
        self.withheld: str | None = None

    @property
    def beat_s(self) -> float | None:
        """How often the main loop must come round to ping; None without a watchdog."""
        return None if self._notifier.watchdog_s is None else self._notifier.watchdog_s / 3

    @property
    def limit_s(self) -> float:
        return (self._notifier.watchdog_s or 0) / 2

    def tick(self) -> None:
        if self.beat_s is None:
            return
        stuck = {name: s for name, s in self._stalls().items() if s > self.limit_s}
        if stuck:
            if self.withheld is None:
                self._withhold(", ".join(f"the {name} stuck for {s:.1f} s"
                                         for name, s in stuck.items()))
            return
        if self.withheld is not None:
            log.warning("recorder healthy again: watchdog pings resume")
            self.withheld = None
            self._marker.unlink(missing_ok=True)
        now = time.monotonic()
        if now - self._last_ping >= self.beat_s:
            self._notifier.watchdog()
            self._last_ping = now

    def _withhold(self, reason: str) -> None:
        self.withheld = reason
        log.critical("recorder hung (%s): withholding the watchdog so systemd restarts us",
                     reason)
        markers.leave(self._marker, {"reason": reason, "since": utc_iso(time.time_ns())})
        self._notifier.status(f"hung: {reason}; watchdog withheld")


def take_marker(store_root: Path) -> dict[str, Any] | None:
    """What the last run said when it withheld the watchdog, once: the marker is removed."""
    return markers.take(store_root / MARKER)
