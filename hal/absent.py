"""Stand-ins for parts that could not be opened, so the device records with what it has.

A body camera whose speaker, buttons or battery gauge fails must still record, and
one whose camera fails must still start, seal its boot record, and keep trying the
camera (the fault watch restarts it with back-off). Each part that cannot be opened
is logged, named with the reason in `absent`, and replaced by a stand-in that does
nothing; the self-check reports every absent part with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from hal.audio import AudioError, Playback
from hal.camera import EncodedOutput, StreamLayout

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


class AbsentCamera:
    """Delivers no frame: the fault watch sees a stalled camera and keeps reopening it."""

    frames_encoded = 0
    origin_ns = 0

    def __init__(self, layout: StreamLayout, reason: str) -> None:
        self.layout = layout
        self.reason = reason

    def start(self, output: EncodedOutput) -> None:
        pass

    def stop(self) -> None:
        pass


class AbsentMicrophone:
    """Captures nothing: the recording keeps its audio track, with no packet in it (never
    invented silence)."""

    def __init__(self, sample_rate: int, channels: int, reason: str) -> None:
        self.sample_rate, self.channels, self.reason = sample_rate, channels, reason

    def start(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        pass

    def stop(self) -> None:
        pass


class AbsentSpeaker:
    """Every playback fails with the reason: nothing is sealed as heard that was not."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def play(self, pcm: np.ndarray, sample_rate: int) -> Playback:
        raise AudioError(f"no speaker: {self.reason}")


class _Released:
    is_pressed = False


class AbsentControls:
    """No button, LED or buzzer: the device is driven by triggers and the control socket."""

    simulated = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.button = self.function_button = _Released()

    def show(self, recording: bool, health: object) -> None:
        pass

    def pulse(self, times: int = 1) -> None:
        pass

    def press(self, long: bool = False, function: bool = False) -> None:
        raise RuntimeError(f"no buttons: {self.reason}")

    def close(self) -> None:
        pass
