"""The retained status a fleet manager sees: what the device does and how long it can go on.

Built from the parts the daemon hands over (its own status, the same sensors the cues and
the self-check read, its running custody ledger); a sensor that cannot be read gives null
here rather than stopping the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.config import Config
from agent.device.offload.custody import Ledger, export_backlog
from agent.evidence.chain import utc_iso
from hal.battery import Battery, projected_runtime_s
from hal.camera.mode import profile_name, recording_bitrate, video_mode
from hal.clock import KernelClock, SimulatedClock
from hal.gnss import Gnss, location_fields
from hal.storage import free_bytes, recording_hours

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusSources:
    """What the status reads, each part given by the daemon that owns it."""

    config: Config
    daemon_status: Callable[[], dict[str, Any]]
    clock: KernelClock | SimulatedClock
    ledger: Ledger
    battery: Battery | None = None
    gnss: Gnss | None = None


def device_status(sources: StatusSources) -> dict[str, Any]:
    status = sources.daemon_status()
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
        "longest_unsynced_ms": status["longest_unsynced_ms"],
        "unexplained_interruptions": status["unexplained_interruptions"],
        "chain_head": status["chain_head"],
        "battery": _guarded(_battery, sources),
        "storage": _guarded(_storage, sources),
        "clock": _guarded(_clock, sources),
        "export": _guarded(_export, sources),
        "location": _guarded(_location, sources),
        "heartbeat_s": sources.config.mqtt.heartbeat_s,
    }


def station_status(sources: StatusSources) -> dict[str, Any]:
    """What a collection station reads besides identity and clock (GA/T 947.4 as vendors
    implement it; docs/station-interface.md): battery, storage and what is recorded, each
    as the fleet status gives it."""
    return {"battery": _guarded(_battery, sources), "storage": _guarded(_storage, sources),
            "video": _guarded(_video, sources)}


def _guarded(read: Callable[[StatusSources], dict[str, Any] | None],
             sources: StatusSources) -> dict[str, Any] | None:
    try:
        return read(sources)
    except Exception:  # one failed sensor must not cost the whole report
        log.exception("status: %s", read.__name__)
        return None


def _battery(sources: StatusSources) -> dict[str, Any] | None:
    if sources.battery is None:
        return None
    state = sources.battery.state()
    runtime = projected_runtime_s(state, sources.config.battery)
    return {"percent": None if state.percent is None else round(state.percent),
            "runtime_min": None if runtime is None else round(runtime / 60),
            "status": state.status}


def _storage(sources: StatusSources) -> dict[str, Any]:
    config = sources.config
    free = free_bytes(config.store_path)
    return {"free_bytes": free,
            "hours_left": round(recording_hours(free, recording_bitrate(config)), 1)}


def _video(sources: StatusSources) -> dict[str, Any]:
    """What the camera is set to record (a segment's record has the stream's own size)."""
    mode = video_mode(sources.config)
    return {"profile": profile_name(sources.config), "width": mode.width,
            "height": mode.height, "fps": mode.fps, "bitrate": mode.bitrate}


def _clock(sources: StatusSources) -> dict[str, Any]:
    """`synced` is the verdict the clock alarm and the self-check give (ClockState.trusted),
    so the fleet view never disagrees with the device; the kernel's own flag beside it."""
    state = sources.clock.state()
    return {"synced": state.trusted(sources.config.clock.max_error_ms),
            "kernel_synced": state.synced, "max_error_ms": state.max_error_us // 1000,
            "source": state.time_source}


def _export(sources: StatusSources) -> dict[str, Any]:
    """Footage still on the device, and whether it is past the export deadline (Art. 20)."""
    backlog = export_backlog(sources.ledger, sources.config.selfcheck.export_deadline_hours)
    if backlog.oldest is None:
        return {"oldest_sealed": None, "oldest_age_h": None, "overdue": False}
    return {"oldest_sealed": backlog.oldest.sealed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "oldest_age_h": round(backlog.age_h, 1),
            "overdue": backlog.overdue}


def _location(sources: StatusSources) -> dict[str, Any] | None:
    """The last GNSS fix as a sealed segment carries it (docs/chain-format.md); null without."""
    return location_fields(sources.gnss)["location"]
