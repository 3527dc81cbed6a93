"""The microphone as the recording's audio track, on the camera's clock.

The camera stamps video in microseconds from its own origin; the microphone stamps
its blocks on CLOCK_MONOTONIC at the converter. The track is counted in samples, so
it has no jitter of its own, but a count alone follows the microphone's crystal,
not CLOCK_MONOTONIC, and loses its place for good at every overrun. So each
block's capture time is compared with the place the count gives it, and the count
is brought back to the converter's clock by inserting silence or dropping samples:
at once after an overrun, otherwise only when the median of a second's
differences passes RESYNC_S, because single timestamps carry scheduling noise.
"""

from __future__ import annotations

import logging
import statistics
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from agent.config import AudioConfig
from hal.audio import Microphone
from hal.camera.aac import AacEncoder
from hal.camera.base import AudioLayout, Camera, EncodedOutput, Still, StreamLayout

log = logging.getLogger(__name__)

# Audio may stray this far from the converter's clock before it is corrected: well below
# one video frame (33 ms at 30 fps), above the noise of ALSA's timestamps.
RESYNC_S = 0.010
JUDGED_OVER = 50        # blocks whose median difference is judged: a second of 20 ms blocks
LOG_EVERY_S = 60.0      # of audio: at most one line per kind, the rest counted into it


@dataclass
class AudioTimingStats:
    """How the track was kept on the converter's clock, for status and tests."""

    overruns: int = 0           # input overflows the microphone reported
    drift_corrections: int = 0  # corrections made without an overrun
    samples_inserted: int = 0   # silence put where samples were lost or came late
    samples_dropped: int = 0    # samples that came early (a fast crystal) or before the start


class _RateLimitedLog:
    """One warning per kind per LOG_EVERY_S of audio, saying how many it stands for."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, kind: str, at_s: float, message: str) -> None:
        held = self._held.get(kind, 0)
        last = self._last.get(kind)
        if last is not None and at_s - last < LOG_EVERY_S:
            self._held[kind] = held + 1
            return
        self._last[kind], self._held[kind] = at_s, 0
        more = f" ({held} more since the last report)" if held else ""
        log.warning("%s%s", message, more)


class AudioTimeline:
    """Samples in, samples out on the converter's clock: silence where samples are missing,
    none where there are too many. Track sample 0 is `anchor_ns` on CLOCK_MONOTONIC."""

    def __init__(self, sample_rate: int, anchor_ns: int) -> None:
        self._rate = sample_rate
        self._anchor_ns = anchor_ns
        self._position = 0   # track sample of the next sample to arrive
        self._emitted = 0    # samples handed on; above _position while a drop is pending
        self._started = False
        self._differences: deque[float] = deque(maxlen=JUDGED_OVER)
        self._log = _RateLimitedLog()
        self.stats = AudioTimingStats()

    def place(self, pcm: np.ndarray, first_sample_ns: int, overran: bool) -> np.ndarray:
        """The samples to append to the track for a block captured from `first_sample_ns`."""
        late = (first_sample_ns - self._anchor_ns) * self._rate / 1e9 - self._position
        if overran or not self._started:
            self._started = True
            self._differences.clear()
            self._correct(round(late), "overrun" if overran else "start")
        else:
            self._differences.append(late)
            if len(self._differences) == JUDGED_OVER:
                median = statistics.median(self._differences)
                if abs(median) > RESYNC_S * self._rate:
                    self._differences.clear()
                    self._correct(round(median), "drift")
        landing, self._position = self._position, self._position + len(pcm)
        if self._emitted > landing:    # a drop still to make: from this block's head
            pcm = pcm[self._emitted - landing:]
        elif self._emitted < landing:  # silence up to where this block belongs
            silence = np.zeros((landing - self._emitted, pcm.shape[1]), pcm.dtype)
            pcm = np.concatenate([silence, pcm])
        self._emitted += len(pcm)
        return pcm

    def _correct(self, samples: int, cause: str) -> None:
        self._position += samples
        self.stats.samples_inserted += max(samples, 0)
        self.stats.samples_dropped += max(-samples, 0)
        if cause == "start":
            return
        if cause == "overrun":
            self.stats.overruns += 1
        else:
            self.stats.drift_corrections += 1
        at_s = self._position / self._rate
        change = (f"{samples / self._rate * 1e3:.1f} ms of silence inserted" if samples >= 0
                  else f"{-samples / self._rate * 1e3:.1f} ms of samples dropped")
        why = ("after an input overrun" if cause == "overrun"
               else "to follow the converter's clock (the microphone's crystal drifts)")
        self._log.warn(cause, at_s, f"audio at {at_s:.1f} s: {change} {why}")


class MicrophoneTrack:
    def __init__(self, microphone: Microphone, config: AudioConfig,
                 origin_ns: Callable[[], int]) -> None:
        self._microphone = microphone
        self._origin_ns = origin_ns
        self._encoder = AacEncoder(microphone.sample_rate, microphone.channels, config.bitrate)
        self.layout = AudioLayout("aac", microphone.sample_rate, microphone.channels,
                                  self._encoder.frame_size, self._encoder.extradata)
        self._first_us = 0
        self._timeline: AudioTimeline | None = None
        self._overruns = 0
        self._output: EncodedOutput | None = None
        self._lock = threading.Lock()

    @property
    def stats(self) -> AudioTimingStats:
        return self._timeline.stats if self._timeline else AudioTimingStats()

    def start(self, output: EncodedOutput) -> None:
        self._output = output
        self._microphone.start(self._on_block)

    def stop(self) -> None:
        self._microphone.stop()

    def _on_block(self, pcm: np.ndarray, first_sample_ns: int) -> None:
        with self._lock:
            output = self._output
            assert output is not None  # the microphone delivers blocks only after start()
            rate = self._encoder.sample_rate
            if self._timeline is None:
                # The priming packet sits one frame before the first sample: keep it >= 0.
                self._first_us = max((first_sample_ns - self._origin_ns()) // 1000,
                                     self._encoder.frame_size * 1_000_000 // rate)
                self._timeline = AudioTimeline(rate, self._origin_ns() + self._first_us * 1000)
                self._overruns = self._microphone.overruns
            overran = self._microphone.overruns != self._overruns
            self._overruns = self._microphone.overruns
            for packet in self._encoder.encode(self._timeline.place(pcm, first_sample_ns,
                                                                    overran)):
                assert packet.pts is not None  # AacEncoder stamps every frame it feeds
                pts_us = self._first_us + packet.pts * 1_000_000 // rate
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

    @property
    def audio_stats(self) -> AudioTimingStats:
        return self._track.stats

    def start(self, output: EncodedOutput) -> None:
        self._camera.start(output)
        self._track.start(output)

    def stop(self) -> None:
        self._track.stop()
        self._camera.stop()

    def still(self, timeout_s: float) -> Still:
        return self._camera.still(timeout_s)
