"""picamera2's own Picamera2 with only its libcamera side replaced: the camera this machine lacks.

A subclass of the real `picamera2.Picamera2`. Everything between the camera and our code is
picamera2's: `start_recording`/`stop_recording`, `start_encoder`, the NullPreview event loop
thread that calls `process_requests` (which runs `pre_callback` and feeds the encoders, and
dies on the first exception, as on a Pi), `dispatch_functions` for `stop`, `CompletedRequest`
with its reference counting and recycling, `MappedArray`, the encoders and the outputs.
Replaced, as libcamera and the DMA heap would provide them: opening the camera (`__init__`),
`create_video_configuration`/`configure_` (libcamera's validation: the stride is the width
rounded up to 64 bytes, as the Pi's ISP pads rows), `start_`/`close` (the sensor), and an
allocator (picamera2's own `Allocator` extension point) whose buffers are numpy arrays.

The sensor thread completes one request per frame duration with a SensorTimestamp on
CLOCK_MONOTONIC advancing by exactly one frame, and wakes the event loop the way libcamera's
event fd does.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

import numpy as np
import picamera2
from libcamera import FrameMetadata, controls
from picamera2.allocators.allocator import Allocator, Sync
from picamera2.request import CompletedRequest, Helpers

STRIDE_ALIGN = 64
BUSY: set[int] = set()  # camera numbers held by an open Picamera2 in this process
SENSOR_TIMESTAMPS: list[int] = []
EXPOSURE_US = 10_000


class _Plane:
    def __init__(self, length: int) -> None:
        self.fd, self.length = -1, length


class _FrameBuffer:
    """libcamera.FrameBuffer: planes and the last frame's metadata."""

    def __init__(self, length: int) -> None:
        self.planes = [_Plane(length)]
        self.metadata = type("FrameMetadata", (), {"status": FrameMetadata.Status.Success})()


class _Request:
    """libcamera.Request: one buffer per stream, its metadata, reuse()."""

    def __init__(self, stream: object, buffer: _FrameBuffer) -> None:
        self.buffers = {stream: buffer}
        self.metadata: dict[Any, Any] = {}

    def reuse(self) -> None:
        self.metadata = {}

    def set_control(self, _id: Any, _value: Any) -> None:
        pass


class _ArraySync(Sync):
    def __init__(self, allocator: Any, fb: Any, write: bool) -> None:
        self._array = allocator.mapped_buffers[fb]

    def __enter__(self) -> Any:
        return self._array

    def __exit__(self, *_exc: object) -> None:
        pass


class ArrayAllocator(Allocator):
    """Buffers in ordinary memory instead of the DMA heap (/dev/dma_heap)."""

    def __init__(self) -> None:
        super().__init__()
        self.sync = _ArraySync
        self.mapped_buffers: dict[Any, Any] = {}


class _Camera:
    """libcamera.Camera as picamera2 drives it: start, stop, queue_request, release."""

    def __init__(self, owner: StandInPicamera2) -> None:
        self._owner = owner
        self.queued: queue.SimpleQueue[_Request] = queue.SimpleQueue()

    def queue_request(self, request: _Request) -> None:
        self.queued.put(request)

    def stop(self) -> None:
        self._owner._sensor_stop.set()
        if self._owner._sensor is not None:
            self._owner._sensor.join()

    def release(self) -> None:
        BUSY.discard(self._owner.camera_idx)


class _CameraManager:
    def handle_request(self, _idx: int) -> None:
        pass


class StandInPicamera2(picamera2.Picamera2):
    def __init__(self, camera_num: int = 0, **_ignored: Any) -> None:
        if camera_num in BUSY:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        BUSY.add(camera_num)
        self.camera_idx = camera_num
        self.camera = _Camera(self)
        self._cm = _CameraManager()
        self.is_open = True
        self.allocator = ArrayAllocator()
        self.helpers = Helpers(self)
        self.lock = threading.Lock()
        self.request_lock = threading.Lock()
        self._requestslock = threading.Lock()
        self._requests: list[Any] = []
        self.completed_requests: list[Any] = []
        self._job_list: list[Any] = []
        self._encoders: set[Any] = set()
        self._max_queue_len = 1
        self.pre_callback = None
        self.post_callback = None
        self._preview = None
        self._event_loop_running = False
        self._preview_stopped = threading.Event()
        self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
        self.notifymeread = os.fdopen(self.notifyme_r, "rb")
        self.started = False
        self.stop_count = 0
        self.configure_count = 0
        self.frames = 0
        self.camera_config: dict[str, Any] = {}
        self.stream_map: dict[str, Any] = {}
        info = type("ControlInfo", (), {"min": 33333, "max": 1_000_000})()
        self.camera_ctrl_info = {"FrameDurationLimits": (controls.FrameDurationLimits, info)}
        self.controls = picamera2.Controls(self)
        self._sensor: threading.Thread | None = None
        self._sensor_stop = threading.Event()

    def create_video_configuration(self, main: dict[str, Any] | None = None,
                                   controls: dict[str, Any] | None = None,
                                   **_ignored: Any) -> dict[str, Any]:
        return {"use_case": "video", "main": {"size": (1280, 720), "format": "XBGR8888",
                                              **(main or {})},
                "lores": None, "raw": None, "display": "main", "encode": "main",
                "controls": {"FrameDurationLimits": (33333, 33333), **(controls or {})}}

    def configure_(self, camera_config: Any = "preview") -> None:
        if camera_config["main"]["format"] != "YUV420":
            raise NotImplementedError("this stand-in camera produces YUV420 only")
        config = dict(camera_config)
        width, height = config["main"]["size"]
        main = {**config["main"], "stride": -(-width // STRIDE_ALIGN) * STRIDE_ALIGN}
        main["framesize"] = main["stride"] * height * 3 // 2
        config["main"] = main
        self.camera_config = config
        self.stream_map = {"main": object()}
        self.encode_stream_name = "main"
        self.configure_count += 1

    def start_(self) -> None:
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        main = self.camera_config["main"]
        self.allocator.mapped_buffers.clear()
        for _ in range(4):
            buffer = _FrameBuffer(main["framesize"])
            self.allocator.mapped_buffers[buffer] = np.zeros(main["framesize"], np.uint8)
            self.camera.queue_request(_Request(self.stream_map["main"], buffer))
        self._sensor_stop.clear()
        self._sensor = threading.Thread(target=self._expose, name="stand-in-sensor",
                                        daemon=True)
        self._sensor.start()
        self.started = True

    def close(self) -> None:
        """picamera2's close, less the DMA allocator it makes anew."""
        if self._preview:
            self.stop_preview()
        if not self.is_open:
            return
        self.stop()
        self.camera.release()
        self.is_open = False
        self.notifymeread.close()
        os.close(self.notifyme_w)

    def _expose(self) -> None:
        """One completed request per frame duration, handed to the event loop."""
        main = self.camera_config["main"]
        (width, height), stride = main["size"], main["stride"]
        frame_ns = self.camera_config["controls"]["FrameDurationLimits"][0] * 1000
        start, index = time.monotonic_ns(), 0
        luma = np.tile(np.linspace(40, 200, width, dtype=np.uint8), (height, 1))
        while not self._sensor_stop.is_set():
            sensor_ns = start + index * frame_ns
            delay = (sensor_ns + frame_ns - time.monotonic_ns()) / 1e9
            if delay > 0 and self._sensor_stop.wait(delay):
                return
            try:
                request = self.camera.queued.get(timeout=0.1)
            except queue.Empty:
                continue  # every buffer is held downstream: the sensor drops this frame
            fb = next(iter(request.buffers.values()))
            planes = self.allocator.mapped_buffers[fb].reshape(height * 3 // 2, stride)
            planes[:] = 128
            planes[:height, :width] = np.roll(luma, index * 4, axis=1)
            SENSOR_TIMESTAMPS.append(sensor_ns)
            request.metadata = {controls.SensorTimestamp: sensor_ns,
                                controls.ExposureTime: EXPOSURE_US,
                                controls.AnalogueGain: 1.5, controls.Lux: 220.0}
            with self._requestslock:
                self._requests.append(CompletedRequest(request, self))
            os.write(self.notifyme_w, b"\x00")
            index += 1
