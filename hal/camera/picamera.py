"""The Raspberry Pi camera through picamera2: H.264 at the sensor's own timestamps.

Targets picamera2 0.3.x as shipped by Raspberry Pi OS Bookworm and Trixie
(`apt install python3-picamera2`; 0.3.17 or newer for `picamera2.platform` and
`LibavH264Encoder`). What is used, and what picamera2 promises about it:

- `Picamera2.create_video_configuration(main={"size", "format": "YUV420"}, controls=
  {"FrameDurationLimits": (us, us)})` and `configure()`: a fixed frame rate, and the
  main stream in planar YUV420, which both encoders take without conversion;
- the encoder: `H264Encoder(bitrate, repeat=True, iperiod=N, framerate=fps)`, the
  SoC's V4L2 hardware encoder (Pi 4 and older, `Platform.VC4`), or on boards without
  one (Pi 5) `LibavH264Encoder` (libx264 through PyAV) with the same arguments.
  `repeat=True` puts SPS/PPS before every keyframe and `iperiod` fixes the keyframe
  interval, so every segment the recorder cuts on a keyframe decodes on its own;
- `Picamera2.start_recording(encoder, output)`: the encoder thread calls
  `output.outputframe(frame, keyframe, timestamp, packet, audio)` once per encoded
  frame (`picamera2.outputs.Output`). `timestamp` is in microseconds since the first
  frame's `SensorTimestamp` (`Encoder.firsttimestamp`, set at that first frame), i.e.
  the real capture time of each frame, not the time Python saw it. libcamera's
  SensorTimestamp is the V4L2 buffer time on CLOCK_MONOTONIC, which gives the
  camera's origin on the clock the microphone track and the chain use;
- `Picamera2.pre_callback(request)`: runs on each request before it is encoded; the
  overlay is drawn there through `MappedArray(request, "main")`, and the request's
  metadata (`SensorTimestamp`, `ExposureTime`, `AnalogueGain`, `Lux`,
  `ColourTemperature`) is kept: the overlay shows the moment of exposure, and
  `sensor` tells the self-check what the sensor sees.

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
from datetime import UTC, datetime
from typing import Any

from agent.config import CameraConfig, Config
from hal.camera.base import EncodedOutput, StreamLayout
from hal.camera.overlay import Overlay

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT_S = 3.0
SENSOR_KEYS = ("SensorTimestamp", "ExposureTime", "AnalogueGain", "Lux", "ColourTemperature")


class PiCamera:
    def __init__(self, config: Config) -> None:
        from picamera2 import Picamera2

        cam = config.camera
        self._config = cam
        self._picam2 = Picamera2()
        frame_us = 1_000_000 // cam.fps
        self._picam2.configure(self._picam2.create_video_configuration(
            main={"size": (cam.width, cam.height), "format": "YUV420"},
            controls={"FrameDurationLimits": (frame_us, frame_us)}))
        self._encoder = _h264_encoder(cam)
        self._overlay = (Overlay(cam.width, cam.height, cam.overlay_fields, config.device.id,
                                 config.device.officer) if cam.overlay else None)
        self.layout = StreamLayout(cam.width, cam.height, cam.fps, audio=None)
        self.origin_ns = 0
        self.frames_encoded = 0
        self.sensor: dict[str, Any] = {}
        self._first_frame = threading.Event()

    @property
    def encoder_name(self) -> str:
        return type(self._encoder).__name__

    def start(self, output: EncodedOutput) -> None:
        """Start the sensor and the encoder; return once the first frame has set the origin
        (or after FIRST_FRAME_TIMEOUT_S: a camera that delivers nothing is the fault watch's)."""
        self.origin_ns = time.monotonic_ns()  # until the first frame says better
        self._picam2.pre_callback = self._pre_callback
        self._picam2.start_recording(self._encoder, _as_picamera2_output(self, output))
        if not self._first_frame.wait(FIRST_FRAME_TIMEOUT_S):
            log.error("picamera2: no frame within %g s of starting", FIRST_FRAME_TIMEOUT_S)

    def stop(self) -> None:
        try:
            self._picam2.stop_recording()
        finally:
            self._picam2.close()

    def _pre_callback(self, request: Any) -> None:
        """On picamera2's camera thread, before the request is encoded: keep the sensor's
        metadata and draw the overlay at the moment of exposure."""
        metadata = request.get_metadata()
        self.sensor = {key: metadata[key] for key in SENSOR_KEYS if key in metadata}
        if self._overlay is None:
            return
        from picamera2 import MappedArray

        exposed_ns = metadata.get("SensorTimestamp", time.monotonic_ns())
        wall = datetime.fromtimestamp(
            (time.time_ns() - (time.monotonic_ns() - exposed_ns)) / 1e9, UTC)
        with MappedArray(request, "main") as mapped:
            self._overlay.burn_yuv420(mapped.array, self._config.height, wall)

    def _first(self) -> None:
        """The first encoded frame: its SensorTimestamp is camera time 0."""
        first_us = self._encoder.firsttimestamp
        if first_us is not None:
            self.origin_ns = first_us * 1000
        self._first_frame.set()


def _h264_encoder(cam: CameraConfig) -> Any:
    """The hardware encoder where the SoC has one, else libx264, both set for segments that
    decode on their own: SPS/PPS on every keyframe, a keyframe every keyframe_interval."""
    from picamera2.encoders import H264Encoder, LibavH264Encoder

    hardware = cam.encoder == "hardware" or (cam.encoder == "auto" and _has_hardware_h264())
    kind = H264Encoder if hardware else LibavH264Encoder
    log.info("picamera2: %s, %d bit/s, keyframe every %d frames", kind.__name__, cam.bitrate,
             cam.keyframe_interval)
    return kind(bitrate=cam.bitrate, repeat=True, iperiod=cam.keyframe_interval,
                framerate=cam.fps)


def _has_hardware_h264() -> bool:
    """VC4 boards (Pi 4 and older) have the V4L2 H.264 block; PiSP boards (Pi 5) have none."""
    from picamera2.platform import Platform, get_platform

    return bool(get_platform() == Platform.VC4)


def _as_picamera2_output(camera: PiCamera, target: EncodedOutput) -> Any:
    """picamera2 accepts only its own Output subclasses, and calls start()/stop() on them;
    forward the packets to ours, noting the first frame and counting frames."""
    from picamera2.outputs import Output

    class _Forward(Output):
        def outputframe(self, frame: Any, keyframe: bool = True, timestamp: int | None = None,
                        packet: Any = None, audio: bool = False) -> None:
            if not audio:
                if camera.frames_encoded == 0:
                    camera._first()
                camera.frames_encoded += 1
            target.outputframe(frame, keyframe, timestamp, packet, audio)

    return _Forward()
