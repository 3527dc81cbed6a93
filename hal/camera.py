"""The camera: an encoder that runs continuously and pushes encoded packets to an Output.

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

from agent.config import Config


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


class Camera(Protocol):
    layout: StreamLayout
    origin_ns: int  # CLOCK_MONOTONIC at camera time 0, once started

    def start(self, output: EncodedOutput) -> None: ...

    def stop(self) -> None: ...


def open_camera(config: Config) -> Camera:
    """The configured backend; hardware libraries are imported only when chosen."""
    if config.camera.backend == "sim":
        from hal.sim_camera import SimulatedCamera

        camera: Camera = SimulatedCamera(config)
    else:
        from hal.picamera import PiCamera

        camera = PiCamera(config)
    if config.audio.enabled and config.audio.backend != "sim":
        from hal.absent import AbsentMicrophone, open_or_absent
        from hal.audio import open_microphone
        from hal.microphone_track import CameraWithMicrophone

        # A dead microphone must not stop the video: the track stays, empty.
        audio = config.audio
        microphone = open_or_absent(
            "microphone", lambda: open_microphone(audio),
            lambda reason: AbsentMicrophone(audio.sample_rate, audio.channels, reason), {})
        return CameraWithMicrophone(camera, microphone, config.audio)
    return camera


def expected_layout(config: Config) -> StreamLayout:
    """The streams the configured camera will deliver, for a camera not (yet) opened."""
    audio = None
    if config.audio.enabled and (config.camera.backend == "sim" or config.audio.backend != "sim"):
        from hal.aac import AacEncoder

        aac = AacEncoder(config.audio.sample_rate, config.audio.channels, config.audio.bitrate)
        audio = AudioLayout("aac", aac.sample_rate, aac.channels, aac.frame_size, aac.extradata)
    return StreamLayout(config.camera.width, config.camera.height, config.camera.fps, audio)
