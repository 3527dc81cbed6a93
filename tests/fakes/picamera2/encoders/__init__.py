"""picamera2.encoders: H264Encoder (hardware, V4L2) and LibavH264Encoder (libx264).

Both are libx264 here. What differs is what picamera2 does differently at the Output:
the V4L2 encoder passes `frame` bytes with no `packet`; the libav one passes
`bytes(packet)` and the PyAV `packet` (pts in µs). Timestamps are µs since the first
frame's SensorTimestamp, `firsttimestamp` holding that first one, as in picamera2.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

from picamera2 import MappedArray
from picamera2.outputs import Output


class Encoder:
    def __init__(self) -> None:
        self._output: list[Output] = []
        self.firsttimestamp: int | None = None
        self.size = (0, 0)
        self.format: str | None = None
        self._running = False

    @property
    def output(self) -> Any:
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value: Any) -> None:
        outputs = value if isinstance(value, list) else [value]
        if not all(isinstance(out, Output) for out in outputs):
            raise RuntimeError("Must pass Output")
        self._output = outputs

    def start(self) -> None:
        if self._running:
            raise RuntimeError("Encoder already running")
        self._running = True
        self.firsttimestamp = None
        for out in self._output:
            out.start()
        self._open()

    def stop(self) -> None:
        if not self._running:
            raise RuntimeError("Encoder already stopped")
        self._running = False
        for out in self._output:
            out.stop()

    def encode(self, stream: str, request: Any) -> None:
        timestamp_us = self._timestamp(request)
        with MappedArray(request, stream) as mapped:
            width, height = self.size
            frame = av.VideoFrame(width, height, "yuv420p")
            y, u, v = (mapped.array[:height], mapped.array[height:height * 5 // 4],
                       mapped.array[height * 5 // 4:])
            for plane, data in zip(frame.planes, (y, u, v), strict=True):
                plane.update(data.tobytes())
            frame.pts = timestamp_us
            for packet in self._codec.encode(frame):
                self._emit(packet)

    def outputframe(self, frame: Any, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        for out in self._output:
            out.outputframe(frame, keyframe, timestamp, packet, audio)

    def _timestamp(self, request: Any) -> int:
        ts = request.get_metadata()["SensorTimestamp"] // 1000
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
        return ts - self.firsttimestamp

    def _open(self) -> None:
        width, height = self.size
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = Fraction(1, 1_000_000)
        codec.framerate = self.framerate
        codec.gop_size = self.iperiod
        if self.bitrate:
            codec.bit_rate = self.bitrate
        codec.options = {"preset": "ultrafast", "tune": "zerolatency",
                         "x264-params": f"repeat-headers={int(self.repeat)}"}
        codec.open()
        self._codec = codec

    def _emit(self, packet: Any) -> None:
        raise NotImplementedError


class H264Encoder(Encoder):
    def __init__(self, bitrate: int | None = None, repeat: bool = True,
                 iperiod: int | None = None, framerate: float | None = None,
                 enable_sps_framerate: bool = False, qp: int | None = None,
                 profile: str | None = None) -> None:
        super().__init__()
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod or 60
        self.framerate = framerate or 30

    def _emit(self, packet: Any) -> None:
        self.outputframe(bytes(packet), packet.is_keyframe, packet.pts)


class LibavH264Encoder(Encoder):
    def __init__(self, bitrate: int | None = None, repeat: bool = True, iperiod: int = 30,
                 framerate: float = 30, qp: int | None = None,
                 profile: str | None = None) -> None:
        super().__init__()
        self.bitrate, self.repeat, self.iperiod, self.framerate = bitrate, repeat, iperiod, \
            framerate

    def _emit(self, packet: Any) -> None:
        self.outputframe(bytes(packet), packet.is_keyframe, timestamp=packet.pts, packet=packet)
