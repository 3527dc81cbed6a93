"""A fake of picamera2 0.3.x's camera side: Picamera2, its requests and MappedArray.

A camera thread produces YUV420 frames at the configured frame rate with a
SensorTimestamp on CLOCK_MONOTONIC advancing by exactly one frame duration (a
sensor is clocked, however late Python sees the frame), calls `pre_callback`, then
hands the request to the encoder, as picamera2 does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

SENSOR_TIMESTAMPS: list[int] = []  # every SensorTimestamp produced, for the tests


class _Request:
    """A completed request: metadata and one YUV420 buffer for the main stream."""

    def __init__(self, buffer: np.ndarray, metadata: dict[str, Any]) -> None:
        self._buffer = buffer
        self._metadata = metadata

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)


class MappedArray:
    def __init__(self, request: _Request, stream: str) -> None:
        if stream != "main":
            raise KeyError(stream)
        self._request = request

    def __enter__(self) -> MappedArray:
        self.array = self._request._buffer
        return self

    def __exit__(self, *_exc: object) -> None:
        del self.array


class Picamera2:
    def __init__(self, camera_num: int = 0) -> None:
        self.pre_callback = None
        self._config: dict[str, Any] | None = None
        self._encoder: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False

    def create_video_configuration(self, main: dict[str, Any] | None = None,
                                   controls: dict[str, Any] | None = None,
                                   **_ignored: Any) -> dict[str, Any]:
        main = {"size": (1280, 720), "format": "XBGR8888", **(main or {})}
        return {"use_case": "video", "main": main,
                "controls": {"FrameDurationLimits": (33333, 33333), **(controls or {})}}

    def configure(self, config: dict[str, Any]) -> None:
        if config["main"]["format"] != "YUV420":
            raise NotImplementedError("this fake produces YUV420 only")
        self._config = config

    def camera_configuration(self) -> dict[str, Any]:
        return self._config or {}

    def start_recording(self, encoder: Any, output: Any) -> None:
        from picamera2.outputs import Output

        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        if not isinstance(output, Output):
            raise RuntimeError("Must pass Output")
        encoder.output = output
        encoder.size = tuple(self._config["main"]["size"])
        encoder.format = "YUV420"
        encoder.start()
        self._encoder = encoder
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fake-libcamera", daemon=True)
        self._thread.start()

    def stop_recording(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._encoder is not None:
            self._encoder.stop()
            self._encoder = None

    def close(self) -> None:
        self.closed = True

    def _run(self) -> None:
        width, height = self._config["main"]["size"]
        frame_ns = self._config["controls"]["FrameDurationLimits"][0] * 1000
        start = time.monotonic_ns()
        index = 0
        luma = np.tile(np.linspace(40, 200, width, dtype=np.uint8), (height, 1))
        while not self._stop.is_set():
            sensor_ns = start + index * frame_ns
            delay = (sensor_ns + frame_ns - time.monotonic_ns()) / 1e9
            if delay > 0 and self._stop.wait(delay):
                return
            buffer = np.full((height * 3 // 2, width), 128, np.uint8)
            buffer[:height] = np.roll(luma, index * 4, axis=1)
            SENSOR_TIMESTAMPS.append(sensor_ns)
            request = _Request(buffer, {"SensorTimestamp": sensor_ns, "ExposureTime": 10000,
                                        "AnalogueGain": 1.5, "Lux": 220.0,
                                        "ColourTemperature": 5200,
                                        "FrameDuration": frame_ns // 1000})
            if self.pre_callback:
                self.pre_callback(request)
            self._encoder.encode("main", request)
            index += 1
