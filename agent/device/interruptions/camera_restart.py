"""An interruption carried across a restart of the daemon, for a camera only a new process
can reopen.

picamera2 can hold a dead camera until the process ends. When the fault watch gives up
restarting it (agent/device/faults.py), the daemon writes the gaps still open (the recording
the camera fault interrupted, or a start it refused) to `<store>/camera-restart-failed`
before it ends, and systemd starts it again. The next start seals each as
`camera_restart_failed` once it has resumed the recording: the officer pressed record, and
a camera fault must not silently end the incident.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from agent.device import markers
from agent.device.interruptions.gaps import Gap, wall_at

log = logging.getLogger(__name__)

MARKER = "camera-restart-failed"


def leave_open(store_root: Path, reason: str, last_frame_mono_ns: int | None,
               gaps: list[Gap]) -> None:
    """Durably, before the daemon ends: why, since when, and the gaps to seal next time."""
    since = None if last_frame_mono_ns is None else wall_at(last_frame_mono_ns)
    log.critical("%s (the last frame at %s): the daemon ends for systemd to start it again, "
                 "%d interruption(s) left open", reason, since, len(gaps))
    try:
        markers.leave(store_root / MARKER, {"reason": reason, "since": since,
                                            "gaps": [dataclasses.asdict(gap) for gap in gaps]})
    except OSError:  # the shutdown must still be sealed
        log.exception("could not write %s: the next start will not resume the recording",
                      MARKER)


def take_open(store_root: Path) -> list[Gap]:
    """The gaps the last run left open when it ended for the camera, once, each as a
    `camera_restart_failed` gap from where it began; none without a marker."""
    marker = markers.take(store_root / MARKER)
    if marker is None:
        return []
    reason, since = marker.get("reason"), marker.get("since")
    log.warning("the last run ended itself for the camera: %s (the last frame at %s)",
                reason, since)
    gaps = []
    for fields in marker.get("gaps", []):
        try:
            opened = Gap(**fields)
        except TypeError as exc:
            log.error("an interruption in %s cannot be read (%s): %r", MARKER, exc, fields)
            continue
        gaps.append(Gap("camera_restart_failed",
                        f"{reason} (the last frame at {since}); the daemon ended itself "
                        f"for a new camera; before that, {opened.cause}: {opened.detail}",
                        opened.recording_before, opened.last_segment, opened.start_wall,
                        opened.start_mono_ns, opened.start_boot_id))
    return gaps
