"""Stand-ins for parts that could not be opened, so the device records with what it has.

A body camera whose speaker, buttons or battery gauge fails must still record, and
one whose camera fails must still start, seal its boot record, and keep trying the
camera (the fault watch restarts it with back-off). Each part that cannot be opened
is logged, named with the reason in `absent`, and replaced by a stand-in that does
nothing; the self-check reports every absent part with that reason. Each stand-in lives
beside its part's protocol: `hal.camera.base.AbsentCamera`, `hal.audio.AbsentMicrophone`
and `AbsentSpeaker`, `hal.gpio.AbsentControls`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def open_or_absent(part: str, opener: Callable[[], T], stand_in: Callable[[str], T],
                   absent: dict[str, str]) -> T:
    """The opened part, or its stand-in with the reason noted in `absent[part]`."""
    try:
        return opener()
    except Exception as exc:  # any failure to open hardware: record without the part
        reason = f"{type(exc).__name__}: {exc}"
        log.critical("%s absent, recording without it: %s", part, reason)
        absent[part] = reason
        return stand_in(reason)
