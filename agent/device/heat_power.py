"""Heat and power warnings: a hot SoC, throttling and under-voltage, as alarms.

None of them stops a recording (the fault watch stops it at `[thermal] stop_celsius`):
a throttled or under-powered board records worse, which is better than not at all. But
under-voltage is how a failing supply ends, in a brown-out the daemon cannot record. So
while under-voltage or throttling lasts, a marker in the store names it (written and
fsync'd when raised, removed when cleared), and the next start seals a recording cut in
that time with it as the interruption's cause instead of `power_loss_or_crash`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import ThermalConfig
from agent.device import markers
from agent.evidence.chain import utc_iso
from hal.thermal import Thermal

log = logging.getLogger(__name__)

MARKER = "power-trouble"
# The cause a cut gets when both stood: a failing supply explains a cut, heat does not.
_CAUSES = ("under_voltage", "throttled")


class HeatPowerWatch:
    def __init__(self, config: ThermalConfig, thermal: Thermal, store_root: Path,
                 raise_alarm: Callable[[str, str], None],
                 clear_alarm: Callable[[str, str], None], interval_s: float) -> None:
        self._config = config
        self._interval_s = interval_s
        self._last_check = float("-inf")
        self._thermal = thermal
        self._marker = store_root / MARKER
        self._raise = raise_alarm
        self._clear = clear_alarm
        self._standing: dict[str, str] = {}

    def check(self, now: float) -> None:
        """Every `interval_s`, read the sensors; raise, repeat or clear each alarm."""
        if now - self._last_check < self._interval_s:
            return
        self._last_check = now
        celsius = self._thermal.celsius()
        conditions = {"hot": (celsius >= self._config.warn_celsius,
                              f"{celsius:.1f} °C, warn at {self._config.warn_celsius:g}, "
                              f"stop at {self._config.stop_celsius:g} °C")}
        flags = self._thermal.power_flags()
        if flags is not None:
            conditions["under_voltage"] = (flags.under_voltage, flags.describe())
            conditions["throttled"] = (flags.throttled, flags.describe())
        for alarm, (raised, value) in conditions.items():
            if raised:
                self._raise(alarm, value)
            else:
                self._clear(alarm, value)
        standing = {cause: conditions[cause][1] for cause in _CAUSES
                    if cause in conditions and conditions[cause][0]}
        if standing.keys() != self._standing.keys():
            self._mark(standing)
        self._standing = standing

    def _mark(self, standing: dict[str, str]) -> None:
        if not standing:
            self._marker.unlink(missing_ok=True)
            return
        cause = next(cause for cause in _CAUSES if cause in standing)
        markers.leave(self._marker, {"cause": cause, "detail": standing[cause],
                                     "since": utc_iso(time.time_ns())})
        log.warning("%s: a power cut now will be sealed with this cause", cause)


def take_power_marker(store_root: Path) -> dict[str, Any] | None:
    """What stood when the last run ended, once: the marker is removed."""
    return markers.take(store_root / MARKER)
