"""The fault watch: what stops a recording for technical reasons, and when it may resume.

Four causes, each raised once and cleared once, as `Fault` and `FaultCleared` events
for the state machine:
- storage_full: reported by the recorder when a write fails for space; clears when
  the store has room for the reserve and `resume_free_bytes` more (a dock purged);
- camera_fault: no frame for `stall_s`; the camera is restarted with back-off, and
  the fault clears when frames flow again. After `restarts_before_exit` restarts in a row
  without a frame the fault watch gives up, and the daemon ends itself for systemd to
  start it again (picamera2 can hold a dead camera until the process ends); but only if
  the camera gave frames earlier in this process's life: a board without one would
  otherwise restart for ever;
- battery_critical: at `stop_percent` off the charger, the recording is sealed while it
  still can be; clears on the charger or at `resume_percent`;
- overheated: at `stop_celsius`; clears at `resume_celsius`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.config import Config
from agent.device.periodic import Periodic
from agent.device.state import Event, Fault, FaultCleared
from agent.evidence.store import Store
from hal.battery import Battery
from hal.storage import free_bytes
from hal.thermal import Thermal

log = logging.getLogger(__name__)

_TICK_S = 0.25
_FIRST_RESTART_S = 1.0


class FaultWatch(Periodic):
    def __init__(self, config: Config, store: Store, post: Callable[[Event], None],
                 frames_seen: Callable[[], int], restart_camera: Callable[[], None],
                 give_up: Callable[[str], None],
                 battery: Battery | None, thermal: Thermal | None) -> None:
        self._config = config
        self._store = store
        self._post = post
        self._frames_seen = frames_seen
        self._restart_camera = restart_camera
        self._give_up = give_up
        self._battery = battery
        self._thermal = thermal
        self.active: dict[str, str] = {}
        self._lock = threading.Lock()
        self._frames = -1
        self._frame_seen_at = time.monotonic()
        self._next_restart = 0.0
        self._restart_delay = _FIRST_RESTART_S
        self.camera_restarts = 0
        self._restarts_without_frame = 0
        self.gave_up = False
        super().__init__("fault-watch", _TICK_S)

    def report(self, cause: str, detail: str) -> None:
        """Raise a fault found elsewhere (the recorder's full disk); thread-safe."""
        with self._lock:
            if cause in self.active:
                return
            self.active[cause] = detail
        log.critical("fault %s: %s", cause, detail)
        self._post(Fault(cause, detail))

    def _clear(self, cause: str, detail: str) -> None:
        with self._lock:
            if self.active.pop(cause, None) is None:
                return
        log.warning("fault %s cleared: %s", cause, detail)
        self._post(FaultCleared(cause))

    def tick(self, now: float) -> None:
        for check in (self._check_camera, self._check_storage, self._check_battery,
                      self._check_thermal):
            try:
                check(now)
            except Exception:  # one failed sensor read must not hide the other faults
                log.exception("fault watch: %s", check.__name__)

    def _check_camera(self, now: float) -> None:
        frames = self._frames_seen()
        if frames != self._frames:
            self._frames, self._frame_seen_at = frames, now
            self._restart_delay = _FIRST_RESTART_S
            self._restarts_without_frame = 0
            self._clear("camera_fault", f"frames flow again after {self.camera_restarts} "
                                        "restart(s)")
            return
        stall_s = self._config.camera.stall_s
        if now - self._frame_seen_at < stall_s:
            return
        if "camera_fault" not in self.active:
            self.report("camera_fault", f"no frame from the camera for {stall_s:g} s")
            self._next_restart = now
        if now >= self._next_restart:
            limit = self._config.camera.restarts_before_exit
            # frames_seen counts every camera's frames since the daemon started.
            if limit and self._restarts_without_frame >= limit and self._frames > 0:
                if not self.gave_up:
                    self.gave_up = True
                    self._give_up(f"no frame after {limit} camera restarts in a row")
                return
            self.camera_restarts += 1
            self._restarts_without_frame += 1
            log.warning("restarting the camera (attempt %d)", self.camera_restarts)
            try:
                self._restart_camera()
            except Exception:  # retried after the back-off like any other failed restart
                log.exception("camera restart %d failed", self.camera_restarts)
            # Give the new camera stall_s to deliver before the next try, and back off.
            self._frame_seen_at = time.monotonic()
            self._next_restart = self._frame_seen_at + stall_s + self._restart_delay
            self._restart_delay = min(self._restart_delay * 2,
                                      self._config.camera.restart_backoff_max_s)

    def _check_storage(self, _now: float) -> None:
        if "storage_full" not in self.active:
            return
        store = self._config.store
        free = free_bytes(self._store.root)
        if free < store.reserve_bytes + store.resume_free_bytes:
            return
        if self._store.hold_reserve(store.reserve_bytes):
            self._clear("storage_full", f"{free} bytes free")

    def _check_battery(self, _now: float) -> None:
        if self._battery is None:
            return
        config = self._config.battery
        state = self._battery.state()
        if state.percent is None:
            return
        charging = state.on_charger
        if state.percent <= config.stop_percent and not charging:
            self.report("battery_critical", f"battery at {state.percent:.0f} %, "
                                       f"stop at {config.stop_percent:g} %")
        elif charging or state.percent >= config.resume_percent:
            self._clear("battery_critical", f"battery at {state.percent:.0f} %, {state.status}")

    def _check_thermal(self, _now: float) -> None:
        if self._thermal is None:
            return
        config = self._config.thermal
        celsius = self._thermal.celsius()
        if celsius >= config.stop_celsius:
            self.report("overheated", f"{celsius:.1f} °C, stop at {config.stop_celsius:g} °C")
        elif celsius <= config.resume_celsius:
            self._clear("overheated", f"{celsius:.1f} °C")
