"""The picamera2 backend through picamera2's documented Output interface, fed with real H.264.

No libcamera here: tests/fakes/picamera2 stands in for the library at the boundary
hal/camera/picamera.py calls (see its README); everything after it is the production path:
the daemon, the recorder cutting on keyframes, the chain, the verifier.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from agent.config import load_config
from agent.evidence.chain import read_bodies
from agent.evidence.verify import verify_store
from tests.support.device import running_daemon, wait_for, write_device_config

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.syspath_prepend(str(FAKES))
    import picamera2

    picamera2.SENSOR_TIMESTAMPS.clear()
    yield picamera2
    for name in [name for name in sys.modules if name.split(".")[0] == "picamera2"]:
        del sys.modules[name]


def picamera2_config(tmp_path: Path, **values: object) -> Path:
    path = write_device_config(tmp_path / "device.toml", tmp_path / "store", **values)
    text = path.read_text().replace('backend = "sim"\nwidth', 'backend = "picamera2"\nwidth')
    path.write_text(text)
    return path


@pytest.mark.system
def test_records_verifiable_segments_at_the_sensor_timestamps(
        fake_picamera2, tmp_path: Path) -> None:
    config_path = picamera2_config(tmp_path)
    with running_daemon(config_path) as daemon:
        assert daemon.camera.encoder_name == "H264Encoder"  # the fake board is a VC4 (Pi 4)
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 3, timeout=30,
                 what="3 segments from the picamera2 backend")
        sensor = dict(daemon.camera.sensor)
    store = tmp_path / "store"
    report = verify_store(store)
    assert report.ok, report.summary()

    bodies = read_bodies(store / "chain.jsonl")
    start = next(b for b in bodies if b["type"] == "record_start")
    # Camera time 0 is the first frame's SensorTimestamp (CLOCK_MONOTONIC), not a guess;
    # picamera2 keeps it in whole microseconds.
    first_ns = fake_picamera2.SENSOR_TIMESTAMPS[0]
    assert start["payload"]["media_origin_mono_ns"] == first_ns // 1000 * 1000
    assert sensor["ExposureTime"] == 10000 and sensor["Lux"] == 220.0

    segments = [b["payload"] for b in bodies if b["type"] == "segment_sealed"]
    for segment in segments[1:]:
        # Each segment decodes on its own: it starts on a keyframe with SPS/PPS before it.
        with av.open(str(store / segment["file"])) as container:
            first = next(container.decode(video=0))
            assert first.key_frame
        assert segment["video"]["first_pts_us"] % 33333 < 34  # sensor-clocked, no jitter


@pytest.mark.system
def test_the_overlay_is_burned_in_at_the_moment_of_exposure(
        fake_picamera2, tmp_path: Path) -> None:
    config_path = picamera2_config(tmp_path)
    with running_daemon(config_path) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, timeout=30,
                 what="a segment")
        bar = daemon.camera._overlay.bar_height
    segment = sorted((tmp_path / "store" / "sealed").glob("*.ts"))[0]
    with av.open(str(segment)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="gray")
    top, below = frame[:bar], frame[bar + 4: bar * 2]
    # White text on a black bar: mostly black, some white, nothing of the test pattern.
    assert np.mean(top < 40) > 0.8 and np.sum(top > 200) > 100
    assert np.mean(below < 40) < 0.2


@pytest.mark.parametrize(("platform", "setting", "expected"), [
    ("pisp", "auto", "LibavH264Encoder"),   # Pi 5: no hardware H.264
    ("vc4", "auto", "H264Encoder"),
    ("vc4", "software", "LibavH264Encoder"),
])
def test_the_encoder_is_the_hardware_one_where_the_board_has_it(
        fake_picamera2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str,
        setting: str, expected: str) -> None:
    from hal.camera.picamera import PiCamera

    monkeypatch.setenv("FAKE_PICAMERA2_PLATFORM", platform)
    config_path = picamera2_config(tmp_path)
    config_path.write_text(config_path.read_text().replace(
        "[camera]\n", f'[camera]\nencoder = "{setting}"\n'))
    config, _ = load_config(config_path)
    camera = PiCamera(config)
    assert camera.encoder_name == expected
    assert camera._encoder.repeat is True
    assert camera._encoder.iperiod == config.camera.keyframe_interval


def test_without_picamera2_the_backend_says_what_is_missing(tmp_path: Path) -> None:
    """On a machine without picamera2 the import fails inside the backend, not at start-up."""
    probe = ("import agent.device.daemon, hal.camera, hal.camera.picamera, sys; "
             "print('picamera2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("model", "platform", "size", "bitrate"), [
    ("Raspberry Pi 4 Model B Rev 1.5", "vc4", (1920, 1080), 9_000_000),
    ("Raspberry Pi Compute Module 4 Rev 1.1", "vc4", (1920, 1080), 9_000_000),
    ("Raspberry Pi 5 Model B Rev 1.0", "pisp", (1280, 720), 4_000_000),
])
def test_profile_auto_asks_picamera2_for_the_boards_profile(
        fake_picamera2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str,
        platform: str, size: tuple[int, int], bitrate: int) -> None:
    from hal.board import board_from_model
    from hal.camera.picamera import PiCamera

    monkeypatch.setenv("FAKE_PICAMERA2_PLATFORM", platform)
    monkeypatch.setattr("hal.camera.mode.this_board", lambda: board_from_model(model))
    config_path = picamera2_config(tmp_path)
    config_path.write_text(config_path.read_text().replace(
        "width = 320\nheight = 240\nfps = 30\n", 'profile = "auto"\n').replace(
        "bitrate = 400000\n", ""))
    config, _ = load_config(config_path)
    camera = PiCamera(config)
    assert (camera.layout.width, camera.layout.height, camera.layout.fps) == (*size, 30)
    assert (camera._encoder.bitrate, camera._encoder.framerate) == (bitrate, 30)
