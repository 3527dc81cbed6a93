"""Runs hal/camera/picamera.py against one picamera2 release; prints what happened as JSON.

Run in its own process per release (`python run.py <scenario>` with that release, its
dependencies and ./stubs on PYTHONPATH, and the project on the path), since picamera2's
modules stay cached once imported. tests/hal/test_picamera2_contract.py asserts on the output.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import picamera2

from tests.hal.picamera2_contract import camera as stand_in

picamera2.Picamera2 = stand_in.StandInPicamera2  # what `from picamera2 import Picamera2` finds

from agent.config import load_config  # noqa: E402
from hal.camera import overlay  # noqa: E402
from hal.camera.picamera import PiCamera, installed_version  # noqa: E402

FPS, GOP = 30, 15


class Collector:
    """Our recorder's side of the Output interface: what it was handed, in order."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def outputframe(self, frame: bytes | None, keyframe: bool = True,
                    timestamp: int | None = None, packet: Any = None,
                    audio: bool = False) -> None:
        self.frames.append({"keyframe": keyframe, "timestamp": timestamp,
                            "nal_types": _nal_types(frame or b"")})


def _nal_types(data: bytes) -> list[int]:
    """The NAL unit types in an Annex B packet (7 SPS, 8 PPS, 5 IDR slice, 1 slice)."""
    return [data[i + 3] & 0x1F for i in range(len(data) - 3) if data[i:i + 3] == b"\0\0\1"]


def _config(encoder: str, width: int = 1280, height: int = 720) -> Any:
    config, _ = load_config(None, store=Path(tempfile.mkdtemp()))
    camera = config.camera.model_copy(update={
        "backend": "picamera2", "encoder": encoder, "fps": FPS, "keyframe_interval": GOP,
        "width": width, "height": height, "stall_s": 2.0})
    return config.model_copy(update={"camera": camera})


def _wait(until: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)


def record() -> dict[str, Any]:
    """75 frames, with the overlay failing on three of them, then stop."""
    calls = {"n": 0}
    burn = overlay.Overlay.burn_yuv420

    def failing_burn(self: Any, planes: Any, height: int, wall: Any) -> None:
        calls["n"] += 1
        if 20 <= calls["n"] < 23:
            raise ValueError("injected overlay failure")
        burn(self, planes, height, wall)

    overlay.Overlay.burn_yuv420 = failing_burn  # type: ignore[method-assign]
    camera = PiCamera(_config("software", width=1000, height=720))
    out = Collector()
    camera.start(out)
    _wait(lambda: len(out.frames) >= 75, 20)
    mapped = {"stride": camera._picam2.camera_config["main"]["stride"],
              "overlay_width": camera._overlay.width, "layout_width": camera.layout.width}
    began = time.monotonic()
    camera.stop()
    return {"version": installed_version(), "encoder": camera.encoder_name,
            "frames": out.frames[:75], "callback_errors": camera.callback_errors,
            "sensor_timestamps_ns": stand_in.SENSOR_TIMESTAMPS[:75],
            "origin_ns": camera.origin_ns, "stop_s": time.monotonic() - began,
            "released": not stand_in.BUSY, "exposure_us": stand_in.EXPOSURE_US, **mapped}


def still() -> dict[str, Any]:
    """Three stills while recording, through picamera2's own capture job; then stop. What the
    encoder was handed, what the sensor made, and what each still shows."""
    camera = PiCamera(_config("software", width=1000, height=720))
    out = Collector()
    camera.start(out)
    _wait(lambda: len(out.frames) >= 15, 10)
    stills = []
    for _ in range(3):
        stills.append(camera.still(2.0))
        time.sleep(0.2)
    taken = len(out.frames)
    _wait(lambda: len(out.frames) >= taken + 15, 10)
    camera.stop()
    stamps = [f["timestamp"] for f in out.frames]
    bar, width = camera._overlay.bar_height, camera.layout.width
    return {"frames": stamps, "sensor_timestamps_ns": stand_in.SENSOR_TIMESTAMPS[:len(stamps)],
            "stills": [_seen(s, stamps, bar, width) for s in stills]}


def _seen(still: Any, stamps: list[int], bar: int, width: int) -> dict[str, Any]:
    """Where the still sits in the video, and how it compares with the stand-in sensor's
    picture of that frame (a grey ramp rolled 4 px a frame; limited-range luma)."""
    rgb = still.rgb.astype(np.int16)
    index = stamps.index(still.pts_us) if still.pts_us in stamps else None
    ramp = np.roll(np.linspace(40, 200, width, dtype=np.uint8), (index or 0) * 4)
    expected = np.clip((ramp.astype(np.float32) - 16) * 255 / 219, 0, 255)
    return {"pts_us": still.pts_us, "index": index, "shape": list(still.rgb.shape),
            "bar_black": float((rgb[:bar] < 24).mean()),
            "bar_white": float((rgb[:bar] > 230).mean()),
            "below_error": float(np.abs(rgb[bar:] - expected[None, :, None]).mean())}


def dead_loop() -> dict[str, Any]:
    """An exception inside picamera2 itself kills its event loop: stop must still return."""
    camera = PiCamera(_config("software"))
    out = Collector()
    camera.start(out)
    _wait(lambda: len(out.frames) >= 10, 10)

    def broken(_request: Any) -> None:
        raise RuntimeError("injected failure inside picamera2's loop")

    camera._picam2.post_callback = broken
    time.sleep(0.5)
    frames = len(out.frames)
    time.sleep(0.5)
    loop_died = len(out.frames) == frames
    began = time.monotonic()
    camera.stop()
    stop_s = time.monotonic() - began
    try:
        PiCamera(_config("software"))
        reopened = "opened"
    except RuntimeError as exc:
        reopened = str(exc)
    return {"loop_died": loop_died, "stop_s": stop_s, "reopen": reopened,
            "stopping": [t.name for t in threading.enumerate() if t.name == "picamera2-stop"]}


def version_check() -> dict[str, Any]:
    """Each encoder's floor against the release installed (its own dist-info)."""
    outcome: dict[str, Any] = {"version": installed_version()}
    for encoder in ("software", "hardware"):
        try:
            camera = PiCamera(_config(encoder))
            outcome[encoder] = "opened"
            camera._picam2.close()
        except RuntimeError as exc:
            outcome[encoder] = f"{type(exc).__name__}: {exc}"
        outcome[f"{encoder}_released"] = not stand_in.BUSY
    return outcome


def half_open() -> dict[str, Any]:
    """configure() refuses: the Picamera2 opened for it is closed, so the next open works."""
    original = stand_in.StandInPicamera2.configure_

    def refuse(self: Any, camera_config: Any = None) -> None:
        raise RuntimeError("injected configure failure")

    stand_in.StandInPicamera2.configure_ = refuse  # type: ignore[method-assign]
    try:
        PiCamera(_config("software"))
    except RuntimeError as exc:
        first = str(exc)
    stand_in.StandInPicamera2.configure_ = original  # type: ignore[method-assign]
    released = not stand_in.BUSY
    camera = PiCamera(_config("software"))
    camera.stop()
    return {"first": first, "released": released, "then": "opened"}


if __name__ == "__main__":
    print(json.dumps({"record": record, "dead_loop": dead_loop, "version_check": version_check,
                      "half_open": half_open, "still": still}[sys.argv[1]]()))
