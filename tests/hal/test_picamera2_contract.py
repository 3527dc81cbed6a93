"""hal/camera/picamera.py against picamera2's own code, at the oldest supported release and the
newest: its encoders (LibavH264Encoder with real PyAV and libx264), Outputs, requests, event
loop and stop, with only libcamera, the DMA heap and the DRM display replaced
(tests/hal/picamera2_contract: stubs/ and camera.py say exactly what). picamera2's H264Encoder
drives the SoC's V4L2 encoder (/dev/video11), which cannot run here: only its version floor is
tested.

Each release is installed from PyPI once into a cache (`pip install --no-deps --target`, with
the dependencies its modules import: PiDNG and python-prctl build from source, the latter
with libcap-dev) and run in its own process, since Python caches modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = Path(__file__).parent / "picamera2_contract"
OLDEST, NEWEST = "0.3.24", "0.3.38"  # the software encoder's floor; the newest checked
_COMMON = ["piexif==1.1.3", "simplejpeg==1.9.0", "PiDNG==4.0.9", "python-prctl==1.8.1"]
_V4L2 = {OLDEST: "v4l2-python3==0.3.5", NEWEST: "videodev2==0.0.4"}  # 0.3.29 switched
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bodycam-tests"


def _installed(version: str) -> Path:
    target = CACHE / f"picamera2-{version}"
    if not (target / "picamera2").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(target), f"picamera2=={version}", _V4L2[version], *_COMMON],
                       check=True)
    return target


def run(version: str, scenario: str) -> dict[str, Any]:
    path = os.pathsep.join([str(CONTRACT / "stubs"), str(_installed(version)), str(ROOT)])
    done = subprocess.run([sys.executable, str(CONTRACT / "run.py"), scenario],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module", params=[OLDEST, NEWEST])
def recorded(request: pytest.FixtureRequest) -> dict[str, Any]:
    return run(request.param, "record")


def test_keyframes_come_at_the_configured_period_each_with_sps_and_pps(recorded) -> None:
    frames = recorded["frames"]
    keyframes = [i for i, f in enumerate(frames) if f["keyframe"]]
    assert keyframes == list(range(0, len(frames), 15))
    for i in keyframes:
        assert frames[i]["nal_types"][:2] == [7, 8], frames[i]  # SPS, PPS, then the IDR
        assert 5 in frames[i]["nal_types"]


def test_timestamps_are_microseconds_of_the_sensor_clock(recorded) -> None:
    sensor = recorded["sensor_timestamps_ns"]
    stamps = [f["timestamp"] for f in recorded["frames"]]
    assert stamps == [(ns // 1000) - (sensor[0] // 1000) for ns in sensor]
    assert recorded["origin_ns"] == sensor[0] // 1000 * 1000


def test_an_overlay_failure_costs_the_overlay_not_the_camera(recorded) -> None:
    # Three frames' overlays raise on picamera2's camera thread; every frame is still encoded
    # and handed on, and the camera stops and is released as usual.
    assert recorded["callback_errors"] == 3
    assert len(recorded["frames"]) == 75
    assert recorded["stop_s"] < 2.0 and recorded["released"]


def test_the_overlay_uses_the_stream_libcamera_configured(recorded) -> None:
    # 1000 px asked for: rows padded to a 1024-byte stride; the overlay and the muxer use the
    # stream's own width, not the stride.
    assert recorded["stride"] == 1024
    assert recorded["overlay_width"] == recorded["layout_width"] == 1000


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_a_still_is_taken_while_the_encoder_keeps_every_frame(version: str) -> None:
    # picamera2's capture job copies the main stream of a request between the pre-callback
    # and the encoder: the still has the overlay, and the request still goes to the encoder.
    outcome = run(version, "still")
    sensor, frames = outcome["sensor_timestamps_ns"], outcome["frames"]
    assert frames == [ns // 1000 - sensor[0] // 1000 for ns in sensor]  # not one frame lost
    for still in outcome["stills"]:
        assert 0 < still["index"] < len(frames) - 1  # a frame of the video, mid-recording
        assert still["shape"] == [720, 1000, 3]  # the stream's width, not its 1024 stride
        assert still["bar_black"] > 0.5 and still["bar_white"] > 0.02  # the overlay's text
        assert still["below_error"] < 3  # the sensor's picture, in full-range RGB
    assert len({still["index"] for still in outcome["stills"]}) == 3


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_stop_returns_when_picamera2s_own_loop_has_died(version: str) -> None:
    # picamera2 re-raises in its event loop and the loop is gone; its stop_recording() would
    # then wait for ever, and the camera stays held: the daemon's give-up is for this.
    outcome = run(version, "dead_loop")
    assert outcome["loop_died"]
    assert outcome["stop_s"] < 3.0
    assert "busy" in outcome["reopen"]


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_a_camera_that_fails_half_way_through_opening_is_closed(version: str) -> None:
    outcome = run(version, "half_open")
    assert outcome == {"first": "injected configure failure", "released": True,
                       "then": "opened"}


def test_the_installed_release_is_checked_against_the_encoders_floor() -> None:
    oldest = run(OLDEST, "version_check")
    assert oldest["software"] == "opened"
    assert oldest["hardware"] == ("UnsupportedPicamera2: picamera2 0.3.24 is too old for "
                                  "H264Encoder: 0.3.26 or newer is needed (docs/hardware.md)")
    assert oldest["hardware_released"]  # refused before the camera is acquired
    newest = run(NEWEST, "version_check")
    assert newest["software"] == newest["hardware"] == "opened"
