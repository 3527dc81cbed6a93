"""The Raspberry Pi camera through picamera2: H.264 at the sensor's own timestamps.

Targets picamera2 0.3.x as shipped by Raspberry Pi OS Bookworm and Trixie
(`apt install python3-picamera2`). The floors, checked at open (`require_supported`):
0.3.24 with the software encoder (older releases call PyAV's `from_ndarray(width=)`, which
the PyAV 17+ in our venv refuses on every frame), 0.3.26 with the V4L2 hardware encoder
(older ones lock up when a frame produces no packet); docs/hardware.md gives the reasons.
What is used, and what picamera2 promises about it:

- `Picamera2.create_video_configuration(main={"size", "format": "YUV420"}, controls=
  {"FrameDurationLimits": (us, us)})` and `configure()`: a fixed frame rate, and the
  main stream in planar YUV420, which both encoders take without conversion. libcamera
  may align the size and pads each row to a stride: the stream's actual size and stride
  are read back from `camera_configuration()` and are what the overlay and the muxer use;
- the encoder: `H264Encoder(bitrate, repeat=True, iperiod=N, framerate=fps)`, the
  SoC's V4L2 hardware encoder (Pi 4 and older, `Platform.VC4`), or on boards without
  one (Pi 5) `LibavH264Encoder` (libx264 through PyAV) with the same arguments.
  `repeat=True` puts SPS/PPS before every keyframe and `iperiod` fixes the keyframe
  interval, so every segment the recorder cuts on a keyframe decodes on its own;
- `Picamera2.start_recording(encoder, output)`: the encoder calls
  `output.outputframe(frame, keyframe, timestamp, packet, audio)` once per encoded
  frame (`picamera2.outputs.Output`). `timestamp` is in microseconds since the first
  frame's `SensorTimestamp` (`Encoder.firsttimestamp`), i.e. the sensor's time of each
  frame, not the time Python saw it. On the Pi that is the start of the frame's readout
  (the V4L2 buffer time, CLOCK_MONOTONIC), which ends its exposure for the first row: the
  media times are readout times, one exposure after the light was caught;
- `Picamera2.pre_callback(request)`: runs on picamera2's camera thread for each request
  before it is encoded; the overlay is drawn there through `MappedArray(request, "main")`,
  stamped with the start of exposure (`SensorTimestamp` less `ExposureTime`, as picamera2's
  own `wait_for_timestamp_` reckons it), and the request's metadata (`SensorTimestamp`,
  `ExposureTime`, `AnalogueGain`, `Lux`, `ColourTemperature`) is kept for the self-check;
- `Picamera2.capture_arrays(["main"], wait=seconds)`, for a still while recording: a job
  that picamera2's event loop runs on the newest request it keeps back for such jobs, or
  else on the next one between the pre-callback and the encoders, so the overlay is on it
  either way; it copies the main stream out (`CompletedRequest.make_array`) and the request
  goes to (or has gone to) the encoder as every other: the video loses no frame. The copy
  is planar YUV420 in the stream's colour space (`camera_configuration()["colour_space"]`,
  limited range), turned into RGB by PyAV's swscale off the camera thread.

picamera2's camera thread ends for good on the first exception it sees, and with it every
frame until the process restarts. So neither the pre-callback nor the Output forwarding to
the recorder may raise: an error is counted in `callback_errors`, logged (rate-limited) and
the frame goes on. A `Picamera2` that fails half-way through opening is closed before the
error goes on (else the next open finds the camera busy), and `stop()` returns within
`[camera] stall_s` even when the camera thread is dead and picamera2's stop would wait on
it for ever.

Gapless splitting and the pre-event buffer are the recorder's (agent/device/recording/recorder.py):
this camera has one Output for its whole life, the Recorder, which cuts on keyframes
and holds the pre-event packets in memory, so picamera2's SplittableOutput and
CircularOutput2 are not needed. Audio is our own microphone track
(hal/camera/microphone_track.py), not picamera2's PulseAudio input.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from agent.config import CameraConfig, Config, VideoMode
from hal.camera.base import EncodedOutput, Still, StillUnavailable, StreamLayout
from hal.camera.mode import video_mode
from hal.camera.overlay import overlay_for

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT_S = 3.0
SENSOR_KEYS = ("SensorTimestamp", "ExposureTime", "AnalogueGain", "Lux", "ColourTemperature")
# The oldest picamera2 each encoder works with; docs/hardware.md says why.
FLOORS = {"LibavH264Encoder": (0, 3, 24), "H264Encoder": (0, 3, 26)}
_ERROR_LOG_INTERVAL_S = 10.0


class UnsupportedPicamera2(RuntimeError):
    """The installed picamera2 is older than the floor for this board's encoder."""


class PiCamera:
    def __init__(self, config: Config, officer: Callable[[], str] | None = None,
                 position: Callable[[], str] | None = None) -> None:
        cam = config.camera
        self._config = cam
        mode = video_mode(config)
        hardware = _hardware_encoder(cam)
        require_supported(hardware)
        from picamera2 import Picamera2

        self._picam2 = Picamera2()
        try:
            frame_us = 1_000_000 // mode.fps
            self._picam2.configure(self._picam2.create_video_configuration(
                main={"size": (mode.width, mode.height), "format": "YUV420"},
                controls={"FrameDurationLimits": (frame_us, frame_us)}))
            main = self._picam2.camera_configuration()["main"]
            width, height = main["size"]
            if (width, height) != (mode.width, mode.height):
                log.warning("picamera2: the stream is %dx%d, not the %dx%d configured",
                            width, height, mode.width, mode.height)
            self._encoder = _h264_encoder(cam, mode, hardware)
        except BaseException:
            _close_quietly(self._picam2)
            raise
        self._height = height
        self._overlay = overlay_for(config, width, height, officer, position)
        self.layout = StreamLayout(width, height, mode.fps, audio=None)
        self.origin_ns = 0
        self.frames_encoded = 0
        self.callback_errors = 0
        self.sensor: dict[str, Any] = {}
        self._first_frame = threading.Event()
        self._errors = _RateLimitedLog()

    @property
    def encoder_name(self) -> str:
        return type(self._encoder).__name__

    def start(self, output: EncodedOutput) -> None:
        """Start the sensor and the encoder; return once the first frame has set the origin
        (or after FIRST_FRAME_TIMEOUT_S: a camera that delivers nothing is the fault watch's)."""
        self.origin_ns = time.monotonic_ns()  # until the first frame says better
        self._picam2.pre_callback = self._pre_callback
        try:
            self._picam2.start_recording(self._encoder, _as_picamera2_output(self, output))
        except BaseException:
            self.stop()
            raise
        if not self._first_frame.wait(FIRST_FRAME_TIMEOUT_S):
            log.error("picamera2: no frame within %g s of starting", FIRST_FRAME_TIMEOUT_S)

    def stop(self) -> None:
        """Stop and close, within stall_s: picamera2's stop waits for its camera thread, which
        never answers once it has died; the camera is then left to the process's end."""
        stopping = threading.Thread(target=self._stop_and_close, name="picamera2-stop",
                                    daemon=True)
        stopping.start()
        stopping.join(self._config.stall_s)
        if stopping.is_alive():
            log.error("picamera2 did not stop within %g s (its camera thread is gone?): "
                      "left behind", self._config.stall_s)

    def _stop_and_close(self) -> None:
        try:
            self._picam2.stop_recording()
        except Exception:
            log.exception("picamera2: stop_recording failed")
        finally:
            _close_quietly(self._picam2)

    def still(self, timeout_s: float) -> Still:
        """The newest frame of the main stream, as the encoder gets it (overlay included),
        copied by picamera2's event loop without pausing the encoder."""
        try:
            (planes,), metadata = self._picam2.capture_arrays(["main"], wait=timeout_s)
        except TimeoutError as exc:
            # The job stays queued: picamera2 runs it on a later frame and drops its result.
            raise StillUnavailable(f"picamera2: no frame within {timeout_s:g} s") from exc
        sensor_ns, first_us = metadata.get("SensorTimestamp"), self._encoder.firsttimestamp
        pts_us = None if sensor_ns is None or first_us is None else sensor_ns // 1000 - first_us
        configured = self._picam2.camera_configuration()
        return Still(_rgb(planes, self.layout.width, self._height, configured["main"]["stride"],
                          str(configured.get("colour_space"))), pts_us)

    def _pre_callback(self, request: Any) -> None:
        """On picamera2's camera thread, before the request is encoded; never raises."""
        self._guarded("pre-callback", lambda: self._annotate(request))

    def _annotate(self, request: Any) -> None:
        """Keep the sensor's metadata and draw the overlay at the start of exposure."""
        found = request.get_metadata()
        self.sensor = {key: found[key] for key in SENSOR_KEYS if key in found}
        if self._overlay is None:
            return
        from picamera2 import MappedArray

        now_mono = time.monotonic_ns()
        exposed_ns = (found.get("SensorTimestamp", now_mono)
                      - found.get("ExposureTime", 0) * 1000)
        wall = datetime.fromtimestamp((time.time_ns() - (now_mono - exposed_ns)) / 1e9, UTC)
        with MappedArray(request, "main") as mapped:
            self._overlay.burn_yuv420(mapped.array, self._height, wall)

    def _encoded(self, audio: bool) -> None:
        """Count a video frame; the first one's SensorTimestamp is camera time 0."""
        if audio:
            return
        if self.frames_encoded == 0:
            first_us = self._encoder.firsttimestamp
            if first_us is not None:
                self.origin_ns = first_us * 1000
            self._first_frame.set()
        self.frames_encoded += 1

    def _guarded(self, where: str, call: Callable[[], None]) -> None:
        """Run on picamera2's threads: an error is counted and logged, never raised (the
        frame goes on, without its overlay if that is what failed)."""
        try:
            call()
        except Exception as exc:
            self.callback_errors += 1
            self._errors.log(f"picamera2 {where}", exc, self.callback_errors)


class _RateLimitedLog:
    """One log line per error kind per interval: a fault on every frame must not flood."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def log(self, where: str, exc: Exception, count: int) -> None:
        now = time.monotonic()
        if now - self._last.get(where, -_ERROR_LOG_INTERVAL_S) < _ERROR_LOG_INTERVAL_S:
            return
        self._last[where] = now
        log.error("%s failed (%d error(s) so far; the frame goes on): %s: %s", where, count,
                  type(exc).__name__, exc, exc_info=exc)


def require_supported(hardware: bool) -> None:
    """Refuse a picamera2 older than the floor for this encoder, naming both versions."""
    kind = "H264Encoder" if hardware else "LibavH264Encoder"
    installed = installed_version()
    floor = FLOORS[kind]
    if _release(installed) < floor:
        raise UnsupportedPicamera2(
            f"picamera2 {installed} is too old for {kind}: {'.'.join(map(str, floor))} or newer "
            "is needed (docs/hardware.md)")


def installed_version() -> str:
    """picamera2's version from its distribution metadata (pip and apt both install it)."""
    try:
        return metadata.version("picamera2")
    except metadata.PackageNotFoundError:
        return "unknown (no picamera2 distribution metadata)"


def _release(version: str) -> tuple[int, ...]:
    """0.3.24 -> (0, 3, 24); anything unreadable sorts first, so it is refused."""
    parts = []
    for part in version.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _hardware_encoder(cam: CameraConfig) -> bool:
    return cam.encoder == "hardware" or (cam.encoder == "auto" and _has_hardware_h264())


def _h264_encoder(cam: CameraConfig, mode: VideoMode, hardware: bool) -> Any:
    """The hardware encoder where the SoC has one, else libx264, both set for segments that
    decode on their own: SPS/PPS on every keyframe, a keyframe every keyframe_interval."""
    from picamera2.encoders import H264Encoder, LibavH264Encoder

    kind = H264Encoder if hardware else LibavH264Encoder
    log.info("picamera2 %s: %s, %d bit/s, keyframe every %d frames", installed_version(),
             kind.__name__, mode.bitrate, cam.keyframe_interval)
    return kind(bitrate=mode.bitrate, repeat=True, iperiod=cam.keyframe_interval,
                framerate=mode.fps)


def _has_hardware_h264() -> bool:
    """VC4 boards (Pi 4 and older) have the V4L2 H.264 block; PiSP boards (Pi 5) have none."""
    from picamera2.platform import Platform, get_platform

    return bool(get_platform() == Platform.VC4)


def _rgb(planes: np.ndarray, width: int, height: int, stride: int,
         colour_space: str) -> np.ndarray:
    """Planar YUV420 rows of `stride` bytes (Y, then U and V at half size) as RGB; libcamera's
    Rec709 and Smpte170m (BT.601) are both limited range, which swscale assumes."""
    import av  # PyAV's swscale: loaded at the first still, the encoder stays picamera2's

    flat = np.ascontiguousarray(planes).reshape(-1)
    half_w, half_h, half_stride = width // 2, height // 2, stride // 2
    luma = flat[:stride * height].reshape(height, stride)[:, :width]
    chroma_size = half_stride * half_h
    u, v = (flat[start:start + chroma_size].reshape(half_h, half_stride)[:, :half_w]
            for start in (stride * height, stride * height + chroma_size))
    i420 = np.concatenate([luma.reshape(-1), u.reshape(-1), v.reshape(-1)])
    frame = av.VideoFrame.from_ndarray(i420.reshape(height * 3 // 2, width), format="yuv420p")
    matrix = "ITU709" if "709" in colour_space else "ITU601"
    return frame.reformat(format="rgb24", src_colorspace=matrix).to_ndarray()


def _close_quietly(picam2: Any) -> None:
    try:
        picam2.close()
    except Exception:
        log.exception("picamera2: close failed")


def _as_picamera2_output(camera: PiCamera, target: EncodedOutput) -> Any:
    """picamera2 accepts only its own Output subclasses, and calls start()/stop() on them;
    forward the packets to ours, counting frames. It runs on picamera2's threads, so it never
    raises: the packet is handed on even when our bookkeeping fails."""
    from picamera2.outputs import Output

    guarded = camera._guarded

    class _Forward(Output):
        def outputframe(self, frame: Any, keyframe: bool = True, timestamp: int | None = None,
                        packet: Any = None, audio: bool = False) -> None:
            guarded("frame count", lambda: camera._encoded(audio))
            guarded("output", lambda: target.outputframe(frame, keyframe, timestamp, packet,
                                                         audio))

    return _Forward()
