"""The camera's contract: an encoder that runs continuously and pushes encoded packets to an Output.

The contract is picamera2's: the encoder thread calls
``output.outputframe(frame, keyframe, timestamp, packet, audio)`` for every
encoded packet, with ``timestamp`` in microseconds on the camera's clock
(non-negative, increasing per stream). Video arrives as ``frame`` bytes
(H.264 Annex B with SPS/PPS repeated on every keyframe) or as a PyAV
``packet``; audio arrives as a PyAV ``packet`` with ``audio=True``. The
recorder is such an Output, so the real camera plugs in unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np


class EncodedOutput(Protocol):
    def outputframe(self, frame: bytes | None, keyframe: bool = True,
                    timestamp: int | None = None, packet: Any = None,
                    audio: bool = False) -> None: ...


@dataclass(frozen=True)
class AudioLayout:
    codec: str
    sample_rate: int
    channels: int
    samples_per_packet: int
    extradata: bytes

    @property
    def packet_duration_us(self) -> Fraction:
        return Fraction(self.samples_per_packet * 1_000_000, self.sample_rate)


@dataclass(frozen=True)
class StreamLayout:
    """What a muxer must know about the streams before the first packet."""

    width: int
    height: int
    fps: int
    audio: AudioLayout | None

    @property
    def frame_interval_us(self) -> Fraction:
        return Fraction(1_000_000, self.fps)


@dataclass(frozen=True)
class Still:
    """One frame of the running video, as it went to the encoder (overlay burned in)."""

    rgb: np.ndarray          # (height, width, 3) uint8, red first
    pts_us: int | None       # the frame's time on the camera's clock, as its packet's


class StillUnavailable(RuntimeError):
    """The camera delivered no frame to take a still from (absent, hung, stopped)."""


class Camera(Protocol):
    """Read-only here: the backends set these themselves, a wrapper only passes them on."""

    @property
    def layout(self) -> StreamLayout: ...

    @property
    def origin_ns(self) -> int:
        """CLOCK_MONOTONIC at camera time 0, once started."""
        ...

    @property
    def frames_encoded(self) -> int: ...

    def start(self, output: EncodedOutput) -> None: ...

    def stop(self) -> None: ...

    def still(self, timeout_s: float) -> Still:
        """A frame of the running video (the newest or the next), as it is encoded, without
        stopping the encoder; StillUnavailable when none comes within `timeout_s`."""
        ...


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

    def still(self, timeout_s: float) -> Still:
        raise StillUnavailable(f"no camera: {self.reason}")
