"""The microphone as the recording's audio track, on the camera's clock.

The camera stamps video in microseconds from its own origin; the microphone stamps
its blocks on CLOCK_MONOTONIC. Knowing the camera's origin on CLOCK_MONOTONIC, the
first audio block is placed on the camera's clock, and from then on time is
counted in samples, so the track has no jitter and no gaps of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from agent.config import AudioConfig
from hal.audio import Microphone
from hal.camera.aac import AacEncoder
from hal.camera.base import AudioLayout, Camera, EncodedOutput, StreamLayout


class MicrophoneTrack:
    def __init__(self, microphone: Microphone, config: AudioConfig,
                 origin_ns: Callable[[], int]) -> None:
        self._microphone = microphone
        self._origin_ns = origin_ns
        self._encoder = AacEncoder(microphone.sample_rate, microphone.channels, config.bitrate)
        self.layout = AudioLayout("aac", microphone.sample_rate, microphone.channels,
                                  self._encoder.frame_size, self._encoder.extradata)
        self._first_us: int | None = None
        self._output: EncodedOutput | None = None
        self._lock = threading.Lock()

    def start(self, output: EncodedOutput) -> None:
        self._output = output
        self._microphone.start(self._on_block)

    def stop(self) -> None:
        self._microphone.stop()

    def _on_block(self, pcm: np.ndarray, first_sample_ns: int) -> None:
        with self._lock:
            output = self._output
            assert output is not None  # the microphone delivers blocks only after start()
            if self._first_us is None:
                # The priming packet sits one frame before the first sample: keep it >= 0.
                self._first_us = max((first_sample_ns - self._origin_ns()) // 1000,
                                     self._encoder.frame_size * 1_000_000
                                     // self._encoder.sample_rate)
            for packet in self._encoder.encode(pcm):
                assert packet.pts is not None  # AacEncoder stamps every frame it feeds
                pts_us = self._first_us + packet.pts * 1_000_000 // self._encoder.sample_rate
                output.outputframe(None, True, pts_us, packet, True)


class CameraWithMicrophone:
    """A camera whose audio comes from a real microphone instead of its own."""

    def __init__(self, camera: Camera, microphone: Microphone, config: AudioConfig) -> None:
        self._camera = camera
        self._track = MicrophoneTrack(microphone, config, lambda: camera.origin_ns)
        self.layout: StreamLayout = replace(camera.layout, audio=self._track.layout)

    @property
    def origin_ns(self) -> int:
        return self._camera.origin_ns

    @property
    def frames_encoded(self) -> int:
        return self._camera.frames_encoded

    def start(self, output: EncodedOutput) -> None:
        self._camera.start(output)
        self._track.start(output)

    def stop(self) -> None:
        self._track.stop()
        self._camera.stop()
