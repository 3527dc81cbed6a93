"""The microphone track on the camera's clock: a drifting crystal and lost samples do not move
the sound away from the picture.

The microphone here is synthetic and driven as fast as the CPU allows; it stands for a
PortAudio capture stream as hal/audio.py's real backends present it: each block comes with
the CLOCK_MONOTONIC time of its first sample at the converter (PortAudio's
inputBufferAdcTime, with the noise of its timestamps), and `overruns` grows before the first
block after samples were lost (sounddevice's status.input_overflow, PyAudio's
paInputOverflow). Its samples are counted on its own crystal; the track's encoder, PyAV's AAC
encoder, and the decoder that finds the sound again are real.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import pytest

from agent.config import AudioConfig
from hal.camera.microphone_track import RESYNC_S, AudioTimingStats, MicrophoneTrack

RATE = 16000               # a rate the config allows; an hour of 48 kHz AAC takes 3 times longer
BLOCK = RATE // 50         # 20 ms blocks, as the real backends deliver them
ORIGIN_NS = 5_000_000_000  # the camera's time 0 on CLOCK_MONOTONIC
VIDEO_FRAME_S = 1 / 30
BURST_S = 0.010            # the sound the test looks for: 10 ms of 1 kHz


class CrystalMicrophone:
    """A microphone whose crystal runs `ppm` fast, losing `overruns` (capture time in s ->
    seconds lost) and stamping blocks with up to `noise_s` of timestamp noise."""

    def __init__(self, ppm: float, overruns: dict[float, float], noise_s: float) -> None:
        self.sample_rate, self.channels = RATE, 1
        self.overruns = 0
        self._rate = RATE * (1 + ppm * 1e-6)  # samples per second of CLOCK_MONOTONIC
        self._losses = sorted(overruns.items())
        self._noise_s = noise_s
        self._on_block: Callable[[np.ndarray, int], None] | None = None

    def start(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        self._on_block = on_block

    def stop(self) -> None:
        pass

    def capture(self, first_s: float, seconds: float, burst_at_s: float) -> None:
        """Deliver `seconds` of capture from `first_s` (s after the camera's origin), silent
        but for a burst captured at `burst_at_s`."""
        assert self._on_block is not None
        rng = np.random.default_rng(17)
        burst = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(round(BURST_S * RATE)) / RATE)
                 ).astype(np.float32)
        silence = np.zeros((BLOCK, 1), np.float32)
        losses = deque(self._losses)
        sample = 0.0  # samples captured so far (lost ones included), on the crystal
        while sample / self._rate < seconds:
            at_s = first_s + sample / self._rate
            if losses and at_s >= losses[0][0]:
                sample += losses.popleft()[1] * self._rate
                self.overruns += 1
                continue
            pcm = silence
            offset = round((burst_at_s - at_s) * self._rate)
            if 0 <= offset < BLOCK:
                pcm = silence.copy()
                pcm[offset:offset + len(burst), 0] = burst[:BLOCK - offset]
            stamp_s = at_s + rng.uniform(-self._noise_s, self._noise_s)
            self._on_block(pcm, ORIGIN_NS + round(stamp_s * 1e9))
            sample += BLOCK


class TailOutput:
    """The recorder's side of the contract: keeps the last audio packets with their times."""

    def __init__(self) -> None:
        self.packets: deque[tuple[int, Any]] = deque(maxlen=200)

    def outputframe(self, frame: bytes | None, keyframe: bool = True,
                    timestamp: int | None = None, packet: Any = None,
                    audio: bool = False) -> None:
        assert audio and timestamp is not None
        self.packets.append((timestamp, packet))


def heard_at_s(output: TailOutput, extradata: bytes) -> float:
    """Camera time (s) of the burst's first sample, found by decoding the kept packets."""
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = extradata
    times: dict[int, int] = {packet.pts: timestamp for timestamp, packet in output.packets}
    for _, packet in output.packets:
        for frame in decoder.decode(packet):
            loud = np.flatnonzero(np.abs(frame.to_ndarray()[0]) > 0.1)
            if frame.pts in times and len(loud) and packet is not output.packets[0][1]:
                return (times[frame.pts] + loud[0] * 1e6 / RATE) / 1e6
    raise AssertionError("the burst is not in the last packets")


def record(microphone: CrystalMicrophone, seconds: float) -> tuple[float, float, MicrophoneTrack]:
    """The burst's capture time and the time it is heard at, both on the camera's clock."""
    track = MicrophoneTrack(microphone, AudioConfig(sample_rate=RATE, channels=1,
                                                    bitrate=32_000), lambda: ORIGIN_NS)
    output = TailOutput()
    track.start(output)
    burst_at_s = 0.3 + seconds - 2.0
    microphone.capture(0.3, seconds, burst_at_s)
    return burst_at_s, heard_at_s(output, track.layout.extradata), track


def test_an_hour_of_a_fast_crystal_with_overruns_stays_within_a_video_frame(
        caplog: pytest.LogCaptureFixture) -> None:
    overruns = {600.0: 0.040, 1300.0: 0.020, 2000.0: 0.060, 2700.0: 0.030}
    microphone = CrystalMicrophone(ppm=100, overruns=overruns, noise_s=0.004)

    with caplog.at_level(logging.WARNING, "hal.camera.microphone_track"):
        captured_s, heard_s, track = record(microphone, 3600.0)

    # Uncorrected, the count would put it 0.36 s late, less the 0.15 s lost.
    assert abs(heard_s - captured_s) < VIDEO_FRAME_S, \
        f"heard {(heard_s - captured_s) * 1e3:+.1f} ms from when it was captured"
    reports = [r.getMessage() for r in caplog.records if "overrun" in r.getMessage()]
    assert len(reports) == len(overruns) and track.stats.overruns == len(overruns)
    for report, lost_s in zip(reports, overruns.values(), strict=True):
        # The gap, give or take the drift not yet corrected and the timestamp's noise.
        filled = re.search(r"([\d.]+) ms of silence inserted", report)
        assert filled and float(filled[1]) == pytest.approx(lost_s * 1e3, abs=14), report
    # 0.36 s of drift in 10 ms steps; timestamp noise corrected as drift would make hundreds.
    assert 30 <= track.stats.drift_corrections <= 40
    assert track.stats.samples_dropped == pytest.approx(0.36 * RATE, rel=0.1)


def test_timestamp_noise_alone_changes_nothing() -> None:
    microphone = CrystalMicrophone(ppm=0, overruns={}, noise_s=0.008)
    captured_s, heard_s, track = record(microphone, 600.0)
    assert abs(heard_s - captured_s) < RESYNC_S  # the first block's noise, never corrected
    assert track.stats == AudioTimingStats()


def test_a_burst_of_overruns_is_one_line_that_counts_them(
        caplog: pytest.LogCaptureFixture) -> None:
    overruns = {10.0: 0.02, 12.0: 0.02, 14.0: 0.02, 80.0: 0.02}
    microphone = CrystalMicrophone(ppm=0, overruns=overruns, noise_s=0.0)
    with caplog.at_level(logging.WARNING, "hal.camera.microphone_track"):
        captured_s, heard_s, track = record(microphone, 90.0)
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 2 and track.stats.overruns == 4
    assert reports[1].endswith("(2 more since the last report)")
    assert abs(heard_s - captured_s) < 0.001
