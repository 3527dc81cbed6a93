"""The retained status a fleet manager sees: what the device does and how long it can go on.

Built from the daemon's own state and the same sensors the cues and the self-check
read; a sensor that cannot be read gives null here rather than stopping the report.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.chain import utc_iso
from agent.selfcheck import oldest_sealed_wall
from hal.battery import projected_runtime_s
from hal.storage import free_bytes, recording_hours

if TYPE_CHECKING:
    from agent.daemon import Daemon

log = logging.getLogger(__name__)


def device_status(daemon: Daemon) -> dict[str, Any]:
    config = daemon.config
    status = daemon.status()
    return {
        "device": status["device"],
        "officer": status["officer"],
        "version": __version__,
        "wall": utc_iso(time.time_ns()),
        "state": status["state"],
        "health": status["health"],
        "alarms": status["alarms"],
        "recording": status["recording"],
        "current_segment": status["current_segment"],
        "unexplained_interruptions": status["unexplained_interruptions"],
        "chain_head": status["chain_head"],
        "battery": _guarded(_battery, daemon),
        "storage": _guarded(_storage, daemon),
        "clock": _guarded(_clock, daemon),
        "export": _guarded(_export, daemon),
        "location": None,  # no positioning backend yet
        "heartbeat_s": config.mqtt.heartbeat_s,
    }


def _guarded(read: Any, daemon: Daemon) -> dict[str, Any] | None:
    try:
        return read(daemon)
    except Exception:  # one failed sensor must not cost the whole report
        log.exception("status: %s", read.__name__)
        return None


def _battery(daemon: Daemon) -> dict[str, Any] | None:
    if daemon.battery is None:
        return None
    state = daemon.battery.state()
    runtime = projected_runtime_s(state, daemon.config.battery)
    return {"percent": None if state.percent is None else round(state.percent),
            "runtime_min": None if runtime is None else round(runtime / 60),
            "status": state.status}


def _storage(daemon: Daemon) -> dict[str, Any]:
    config = daemon.config
    bitrate = config.camera.bitrate + (config.audio.bitrate if config.audio.enabled else 0)
    free = free_bytes(config.store_path)
    return {"free_bytes": free, "hours_left": round(recording_hours(free, bitrate), 1)}


def _clock(daemon: Daemon) -> dict[str, Any]:
    state = daemon.clock.state()
    return {"synced": state.synced, "max_error_ms": state.max_error_us // 1000,
            "source": state.time_source}


def _export(daemon: Daemon) -> dict[str, Any]:
    """Footage still on the device, and whether it is past the export deadline (Art. 20)."""
    oldest = oldest_sealed_wall(daemon.store)
    if oldest is None:
        return {"oldest_sealed": None, "oldest_age_h": None, "overdue": False}
    age_h = (datetime.now(UTC) - oldest).total_seconds() / 3600
    return {"oldest_sealed": oldest.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "oldest_age_h": round(age_h, 1),
            "overdue": age_h > daemon.config.selfcheck.export_deadline_hours}
