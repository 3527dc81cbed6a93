"""The simulated camera: synthetic frames encoded to real H.264 (libx264, PyAV) with AAC audio.

It behaves as picamera2's encoder does: one encoder thread pushes every packet
to the output with a microsecond timestamp. The frames carry the overlay of
hal/camera/overlay.py (UTC time, device id, officer id), as the real camera's do, so a
reviewer can tell any frame's moment by looking at it.

A still (`still()`, a photo) is a copy of the next frame rendered, overlay and all, handed
over on the encoder thread just before that frame is encoded.

Faults are simulated as the simulated battery is discharged, through a file: while
`<store>/sim/camera/fault` says `hang` the encoder delivers nothing (a stuck sensor);
`fail` ends the encoder thread with an error (a crashed encoder); `dead` delivers nothing
and every open fails "busy", as picamera2 does once its camera thread has died (the
camera stays held until the process ends).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import av
import numpy as np

from agent.config import Config
from hal.camera.aac import AacEncoder
from hal.camera.base import AudioLayout, EncodedOutput, Still, StillUnavailable, StreamLayout
from hal.camera.mode import video_mode
from hal.camera.overlay import Overlay, overlay_for

log = logging.getLogger(__name__)

# Camera clock origin: keeps the AAC encoder's priming packet (-1024 samples) non-negative.
CLOCK_ORIGIN_US = 100_000
TONE_HZ = 440.0


class SimulatedCamera:
    def __init__(self, config: Config, officer: Callable[[], str] | None = None,
                 position: Callable[[], str] | None = None) -> None:
        self.fault_file = config.store_path / "sim" / "camera" / "fault"
        self.fault_file.parent.mkdir(parents=True, exist_ok=True)
        if self._fault() == "dead":
            raise OSError(errno.EBUSY, f"simulated camera: {os.strerror(errno.EBUSY)} "
                                       f"({self.fault_file})")
        cam, audio = config.camera, config.audio
        self._config = config
        self._mode = mode = video_mode(config)
        self._video = _video_encoder(mode.width, mode.height, mode.fps, cam.keyframe_interval,
                                     mode.bitrate)
        # The tone is the simulated microphone of a simulated device; a real microphone
        # is its own track (hal/camera/microphone_track.py) on the camera's clock.
        self._audio = (AacEncoder(audio.sample_rate, audio.channels, audio.bitrate)
                       if audio.enabled and audio.backend == "sim" else None)
        self.layout = StreamLayout(
            mode.width, mode.height, mode.fps,
            AudioLayout("aac", audio.sample_rate, audio.channels, self._audio.frame_size,
                        self._audio.extradata) if self._audio else None)
        self.origin_ns = 0
        self._frames = _FrameSource(mode.width, mode.height,
                                    overlay_for(config, mode.width, mode.height, officer,
                                                position))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_encoded = 0
        self._stills = _StillRequests()

    def start(self, output: EncodedOutput) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(output,),
                                        name="sim-encoder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def still(self, timeout_s: float) -> Still:
        """The next frame rendered, as it goes to the encoder: taking it costs the video
        nothing but a copy of the image."""
        return self._stills.wait(timeout_s)

    def _fault(self) -> str:
        try:
            return self.fault_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return ""

    def _run(self, output: EncodedOutput) -> None:
        fps = self._mode.fps
        realtime = self._config.camera.realtime
        started_mono_ns = time.monotonic_ns()
        started_mono = started_mono_ns / 1e9
        # CLOCK_MONOTONIC at camera time 0, so other tracks can share the camera's clock.
        self.origin_ns = started_mono_ns - CLOCK_ORIGIN_US * 1000
        started_wall = datetime.now(UTC)
        audio_samples = 0
        index = 0
        while not self._stop.is_set():
            fault = self._fault()
            if fault in ("hang", "dead"):
                self._stop.wait(0.05)
                continue
            if fault == "fail":
                log.error("simulated camera: encoder failed (%s)", self.fault_file)
                return
            if realtime:
                delay = started_mono + index / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            offset_us = index * 1_000_000 // fps
            image = self._frames.render(index, started_wall + timedelta(microseconds=offset_us))
            self._stills.hand_over(image, CLOCK_ORIGIN_US + offset_us)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in self._video.encode(frame):
                assert packet.pts is not None  # libx264 passes each frame's pts on to its packet
                output.outputframe(bytes(packet), packet.is_keyframe,
                                   CLOCK_ORIGIN_US + packet.pts * 1_000_000 // fps)
            index += 1
            self.frames_encoded = index
            if self._audio:
                audio_samples = self._push_audio(output, audio_samples,
                                                 Fraction(index, fps))

    def _push_audio(self, output: EncodedOutput, samples: int, until: Fraction) -> int:
        """Encode tone up to `until` seconds, so audio and video share one time base."""
        enc = self._audio
        assert enc is not None  # called only while the tone is on
        rate = enc.sample_rate
        end = int(until * rate)
        t = np.arange(samples, end) / rate
        tone = (0.1 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
        for packet in enc.encode(np.tile(tone[:, None], (1, enc.channels))):
            assert packet.pts is not None  # AacEncoder stamps every frame it feeds
            output.outputframe(None, True, CLOCK_ORIGIN_US + packet.pts * 1_000_000 // rate,
                               packet, True)
        return end


class _StillRequests:
    """Stills asked for on other threads, each handed the next frame the encoder renders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[threading.Event, list[Still]]] = []

    def wait(self, timeout_s: float) -> Still:
        request: tuple[threading.Event, list[Still]] = (threading.Event(), [])
        with self._lock:
            self._waiting.append(request)
        if not request[0].wait(timeout_s):
            with self._lock:
                if request in self._waiting:
                    self._waiting.remove(request)
            if not request[1]:
                raise StillUnavailable(f"simulated camera: no frame within {timeout_s:g} s")
        return request[1][0]

    def hand_over(self, image: np.ndarray, pts_us: int) -> None:
        """On the encoder thread: a copy of this frame to everyone waiting."""
        if not self._waiting:
            return
        with self._lock:
            waiting, self._waiting = self._waiting, []
        still = Still(image.copy(), pts_us)
        for done, result in waiting:
            result.append(still)
            done.set()


def _video_encoder(width: int, height: int, fps: int, gop: int,
                   bitrate: int) -> av.video.codeccontext.VideoCodecContext:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, fps)
    enc.framerate = Fraction(fps, 1)
    enc.bit_rate = bitrate
    enc.gop_size = gop
    enc.max_b_frames = 0
    # Fixed GOP (no scene-cut keyframes), no B-frames, SPS/PPS on every keyframe:
    # every segment then starts decodable and rotation points are predictable.
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "keyint_min": str(gop),
                   "sc_threshold": "0", "x264-params": "repeat-headers=1"}
    enc.open()
    return enc


class _FrameSource:
    """A moving test pattern, with the body camera's overlay when one is configured."""

    def __init__(self, width: int, height: int, overlay: Overlay | None) -> None:
        x = np.linspace(0, 255, width, dtype=np.float32)
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        self._base = np.stack([np.broadcast_to(x, (height, width)),
                               np.broadcast_to(y, (height, width)),
                               (x + y) % 256], axis=-1).astype(np.uint8)
        self._overlay = overlay

    def render(self, index: int, wall: datetime) -> np.ndarray:
        image = np.roll(self._base, index * 4, axis=1)
        if self._overlay:
            self._overlay.burn_packed(image, wall)
        return image
