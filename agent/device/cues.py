"""The officer's cues: a reminder while recording; alarms for battery, clock, storage and
footage not exported in time; and alarms for the faults that interrupt a recording (raised by
the daemon).

The device has no screen, so it says what matters by vibration, LED and voice. An
alarm is sealed when it is raised and when it clears, so the chain shows how long
the device ran with a low battery or a wrong clock; while it lasts it is repeated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.config import Config
from agent.device.periodic import Periodic
from agent.device.voice import Voice
from agent.evidence.chain import Chain
from hal.battery import Battery, projected_runtime_s
from hal.camera.mode import recording_bitrate
from hal.clock import KernelClock, SimulatedClock
from hal.gpio import OfficerControls
from hal.storage import free_bytes, recording_hours

log = logging.getLogger(__name__)

Condition = tuple[bool, str]  # raised?, and what was measured
_BATTERY_CLEAR_MARGIN_S = 5 * 60


class Cues(Periodic):
    def __init__(self, config: Config, chain: Chain, voice: Voice, controls: OfficerControls,
                 battery: Battery | None, clock: KernelClock | SimulatedClock,
                 recording: Callable[[], bool],
                 on_change: Callable[[], None],
                 export_overdue: Callable[[], Condition] | None = None) -> None:
        self._config = config
        self._chain = chain
        self._voice = voice
        self._controls = controls
        self._battery = battery
        self._clock = clock
        self._recording = recording
        self._on_change = on_change
        self._export_overdue = export_overdue  # Art. 20, from the dock's custody ledger
        self.active: set[str] = set()
        self._lock = threading.Lock()
        self._announced: dict[str, float] = {}
        self._recording_since: float | None = None
        self._last_reminder = 0.0
        self._last_check = float("-inf")
        self._reminders: list[Callable[[float], None]] = []
        super().__init__("cues", min(1.0, config.cues.check_interval_s,
                                     self._reminder_interval or 1.0))

    @property
    def _reminder_interval(self) -> float:
        return self._config.cues.reminder_interval_s

    def add_reminder(self, remind: Callable[[float], None]) -> None:
        """Another reminder run on the cues' tick (e.g. an unexplained interruption)."""
        self._reminders.append(remind)

    def tick(self, now: float) -> None:
        self._remind(now)
        for remind in self._reminders:
            remind(now)
        if now - self._last_check >= self._config.cues.check_interval_s:
            self._last_check = now
            self._check_alarms(now)

    def _remind(self, now: float) -> None:
        """A pulse every few minutes while recording, so the officer knows it still is."""
        if not self._recording():
            self._recording_since = None
            return
        if self._recording_since is None:
            self._recording_since = self._last_reminder = now
        if self._reminder_interval and now - self._last_reminder >= self._reminder_interval:
            self._last_reminder = now
            self._controls.pulse(1)

    def _check_alarms(self, now: float) -> None:
        cues = self._config.cues
        conditions: dict[str, Condition] = {}
        if cues.battery_alarm and self._battery is not None:
            conditions["battery_low"] = self._battery_low()
        if cues.clock_alarm:
            conditions["clock_unsynced"] = self._clock_unsynced()
        if cues.storage_alarm:
            conditions["storage_low"] = self._storage_low()
        if self._export_overdue is not None:
            conditions["export_overdue"] = self._export_overdue()
        for alarm, (raised, value) in conditions.items():
            if raised:
                self.raise_alarm(alarm, value)
            else:
                self.clear_alarm(alarm, value)

    def raise_alarm(self, alarm: str, value: str) -> None:
        """Seal, buzz and say it when it is new; repeat it every alarm_repeat_s while it lasts."""
        now = time.monotonic()
        with self._lock:
            new = alarm not in self.active
            if not new and now - self._announced[alarm] < self._config.cues.alarm_repeat_s:
                return
            self.active.add(alarm)
            self._announce(alarm, now)
        if new:
            self._chain.append("alarm", {"alarm": alarm, "raised": True, "value": value})
            log.warning("alarm %s: %s", alarm, value)
            self._on_change()

    def clear_alarm(self, alarm: str, value: str) -> None:
        with self._lock:
            if alarm not in self.active:
                return
            self.active.discard(alarm)
        self._chain.append("alarm", {"alarm": alarm, "raised": False, "value": value})
        log.info("alarm %s cleared: %s", alarm, value)
        self._on_change()

    def _announce(self, alarm: str, now: float) -> None:
        self._announced[alarm] = now
        self._controls.pulse(3)
        self._voice.say(alarm.replace("_", "-"))

    def _battery_low(self) -> Condition:
        """From the recording time left, not the percentage: a percentage means minutes
        only for one pack at one draw. Raised at `low_minutes` left; cleared on the charger,
        or by an estimate back above the threshold by a margin (a fresh pack), so that an
        estimate wavering around it does not raise and clear it at every check."""
        threshold_s = self._config.battery.low_minutes * 60
        state = self._battery.state()
        runtime = projected_runtime_s(state, self._config.battery)
        level = "level unknown" if state.percent is None else f"{state.percent:.0f} %"
        if state.on_charger:
            return False, f"{level}, {state.status.lower()}"
        if runtime is None:
            return False, f"{level}, runtime unknown ({state.source})"
        if "battery_low" in self.active:
            low = runtime <= threshold_s + _BATTERY_CLEAR_MARGIN_S
        else:
            low = runtime <= threshold_s
        return low, f"{level}, about {runtime / 60:.0f} min left"

    def _clock_unsynced(self) -> Condition:
        state = self._clock.state()
        return not state.trusted(self._config.clock.max_error_ms), state.describe()

    def _storage_low(self) -> Condition:
        config = self._config
        free = free_bytes(config.store_path)
        minutes = recording_hours(free, recording_bitrate(config)) * 60
        return (minutes < config.cues.storage_low_minutes,
                f"{free / 1e9:.2f} GB free, about {minutes:.0f} min of recording")
