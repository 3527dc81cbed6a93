"""The Raspberry Pi camera through picamera2, with the hardware H.264 encoder.

Targets picamera2 0.3.x (Raspberry Pi OS Bookworm, `apt install python3-picamera2`):
`Picamera2.create_video_configuration`, `H264Encoder(bitrate, repeat=True, iperiod=N)`
and `Picamera2.start_recording(encoder, output)`, where the encoder thread calls
`output.outputframe(frame, keyframe, timestamp, packet, audio)` with microsecond
timestamps counted from the first frame. `repeat=True` puts SPS/PPS on every
keyframe, so each segment decodes on its own.

Not yet here (the real-recorder issue): microphone audio through picamera2's
encoder, the time/identity overlay, and the software encoder for boards without
a hardware one. This machine has no camera, so this module is not exercised by
the tests; it is imported only when [camera] backend = "picamera2".
"""

from __future__ import annotations

import time

from agent.config import Config
from hal.camera import EncodedOutput, StreamLayout


class PiCamera:
    def __init__(self, config: Config) -> None:
        from picamera2 import Picamera2
        from picamera2.encoders import H264Encoder

        cam = config.camera
        self._picam2 = Picamera2()
        self._picam2.configure(self._picam2.create_video_configuration(
            main={"size": (cam.width, cam.height)}, controls={"FrameRate": cam.fps}))
        self._encoder = H264Encoder(bitrate=cam.bitrate, repeat=True,
                                    iperiod=cam.keyframe_interval)
        self.layout = StreamLayout(cam.width, cam.height, cam.fps, audio=None)
        self.origin_ns = 0

    def start(self, output: EncodedOutput) -> None:
        # picamera2 counts timestamps from the first frame; taking the start of recording
        # as that moment is good to a frame interval. Mapping the sensor's own timestamp
        # (request metadata SensorTimestamp) is left for the real-recorder issue.
        self.origin_ns = time.monotonic_ns()
        self._picam2.start_recording(self._encoder, _as_picamera2_output(output))

    def stop(self) -> None:
        self._picam2.stop_recording()
        self._picam2.close()


def _as_picamera2_output(target: EncodedOutput) -> object:
    """picamera2 calls start()/stop() on its Outputs; forward only the packets to ours."""
    from picamera2.outputs import Output

    class _Forward(Output):
        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
            target.outputframe(frame, keyframe, timestamp, packet, audio)

    return _Forward()
