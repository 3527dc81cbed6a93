"""Photos on the simulated device: the PHOTO button (a MockFactory pin) and the control socket
take a still from the running camera, sealed and chained like a segment, with the video's
overlay, while the recording goes on without losing a frame."""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from agent.device.state import State
from agent.evidence.chain import read_bodies
from tests.support.device import BODYCAM, running_daemon, wait_for

PHOTO_PIN = 16  # tests/support/device.py's [gpio] photo_pin
WIDTH, HEIGHT, FPS = 320, 240, 30


def records(store: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in read_bodies(store / "chain.jsonl") if r["type"] == kind]


def press_photo(daemon: Any) -> None:
    pin = daemon.controls.factory.pin(PHOTO_PIN)
    pin.drive_low()  # pulled up: a press pulls the pin to ground
    pin.drive_high()


def verify(store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BODYCAM, "verify", str(store)], capture_output=True, text=True,
                          timeout=120)


def decoded_video(store: Path, recording: int) -> list[tuple[int, np.ndarray]]:
    """(presentation time in µs, RGB image) of every video frame of a recording, in order,
    decoded by FFmpeg from the sealed segments."""
    frames = []
    for record in records(store, "segment_sealed"):
        if record["payload"]["recording"] != recording:
            continue
        with av.open(str(store / record["payload"]["file"])) as container:
            for frame in container.decode(video=0):
                assert frame.pts is not None
                frames.append((round(frame.pts * frame.time_base * 1_000_000),
                               frame.to_ndarray(format="rgb24")))
    return frames


def raw_pattern(pts_us: int) -> np.ndarray:
    """The simulated camera's test pattern at this time, without the overlay."""
    from hal.camera.sim import CLOCK_ORIGIN_US, _FrameSource

    index = (pts_us - CLOCK_ORIGIN_US) * FPS // 1_000_000
    return _FrameSource(WIDTH, HEIGHT, None).render(index, None)  # type: ignore[arg-type]


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def photographed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording with a photo from the PHOTO button in the middle of it, and a photo from
    the control socket in standby after it."""
    from tests.support.device import write_device_config

    root = tmp_path_factory.mktemp("photo")
    config = write_device_config(root / "device.toml", root / "store")
    with running_daemon(config) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 2, what="two segments")
        press_photo(daemon)
        wait_for(lambda: len(records(root / "store", "photo")) == 1, timeout=10,
                 what="the photo record")
        sealed = daemon.recorder.stats.segments_sealed
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= sealed + 2,
                 what="two more segments")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        subprocess.run([*BODYCAM, "photo", "--config", str(config)], check=True,
                       capture_output=True, timeout=30)
        wait_for(lambda: len(records(root / "store", "photo")) == 2, timeout=10,
                 what="the standby photo record")
    return root / "store"


def test_a_photo_during_a_recording_is_sealed_and_chained(photographed: Path) -> None:
    [start] = records(photographed, "record_start")
    during, standby = records(photographed, "photo")
    payload = during["payload"]
    data = (photographed / payload["file"]).read_bytes()
    assert payload["file"] == f"sealed/{during['seq']:08d}.jpg"
    assert (payload["recording"], payload["source"]) == (start["seq"], "button")
    assert (payload["width"], payload["height"]) == (WIDTH, HEIGHT)
    assert (payload["size"], payload["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert (photographed / payload["file"]).stat().st_mode & 0o777 == 0o444
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (WIDTH, HEIGHT), "RGB")
    assert standby["payload"]["recording"] is None
    assert standby["payload"]["source"] == "control"
    assert standby["payload"]["file"] == f"sealed/{standby['seq']:08d}.jpg"


def test_the_photo_is_the_video_frame_with_its_overlay(photographed: Path) -> None:
    [start] = records(photographed, "record_start")
    payload = records(photographed, "photo")[0]["payload"]
    photo = np.asarray(Image.open(photographed / payload["file"]).convert("RGB"))
    # The frame of the recording at the photo's time (MPEG-TS keeps it in 90 kHz ticks).
    [video] = [image for at, image in decoded_video(photographed, start["seq"])
               if abs(at - payload["pts_us"]) <= 11]
    raw = raw_pattern(payload["pts_us"])
    bar = 240 // 24 * 3 // 2 + 4  # hal/camera/overlay.py's bar height at 240 lines
    # The same picture as the recording's frame at that moment, overlay and all (both lossy) ...
    assert difference(photo, video) < 6
    # ... whose overlay bar is not the camera's raw picture, while below it the picture is.
    assert difference(photo[:bar], raw[:bar]) > 40
    assert difference(photo[bar:], raw[bar:]) < 6


def test_no_video_frame_is_lost_across_the_photo(photographed: Path) -> None:
    [start] = records(photographed, "record_start")
    [stop] = records(photographed, "record_stop")
    pts_us = records(photographed, "photo")[0]["payload"]["pts_us"]
    times = [t for t, _ in decoded_video(photographed, start["seq"])]
    assert times[0] < pts_us < times[-1]
    steps = {b - a for a, b in itertools.pairwise(times)}
    assert steps <= {33_333, 33_334}, steps  # one frame each at 30 fps, in 90 kHz ticks as µs
    assert len(times) == stop["payload"]["video_frames"]


def test_bodycam_verify_passes_and_catches_a_changed_photo(photographed: Path,
                                                           tmp_path: Path) -> None:
    done = verify(photographed)
    assert done.returncode == 0, done.stdout + done.stderr
    copy = tmp_path / "copy"
    shutil.copytree(photographed, copy, ignore=shutil.ignore_patterns("control.sock"))
    photo = records(copy, "photo")[0]
    path = copy / photo["payload"]["file"]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the picture
    path.write_bytes(bytes(data))
    done = verify(copy)
    assert done.returncode != 0
    assert re.search(rf"photo {photo['payload']['file']} \(record {photo['seq']}\).*SHA-256 "
                     "differs", done.stdout + done.stderr), done.stdout + done.stderr


def test_a_photo_in_an_encrypted_store_decrypts_to_the_jpeg(write_config, tmp_path: Path) -> None:
    identity = tmp_path / "agency.key"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = re.search(r"public key: (age1\w+)", identity.read_text()).group(1)
    config = write_config(extra=f'[encryption]\nenabled = true\nrecipients = ["{recipient}"]')
    store = tmp_path / "store"
    with running_daemon(config) as daemon:
        press_photo(daemon)
        wait_for(lambda: len(records(store, "photo")) == 1, timeout=10, what="the photo")
    [photo] = records(store, "photo")
    payload = photo["payload"]
    assert payload["file"] == f"sealed/{photo['seq']:08d}.jpg.age"
    assert not list(store.rglob("*.jpg")), "no photo in the clear on the device"
    stored = (store / payload["file"]).read_bytes()
    assert (payload["size"], payload["sha256"]) == (len(stored),
                                                    hashlib.sha256(stored).hexdigest())
    jpeg = subprocess.run(["age", "-d", "-i", str(identity), str(store / payload["file"])],
                          check=True, capture_output=True).stdout
    assert payload["plaintext"] == {"sha256": hashlib.sha256(jpeg).hexdigest(),
                                    "size": len(jpeg)}
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        assert (image.format, image.size) == ("JPEG", (WIDTH, HEIGHT))
    done = verify(store)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_frame_from_the_camera_means_no_photo_and_a_cue(write_config,
                                                           tmp_path: Path) -> None:
    store = tmp_path / "store"
    # The fault watch would call the stuck camera a fault (and pulse) only after a minute.
    with running_daemon(write_config(stall_s=60)) as daemon:
        buzzer = daemon.controls.factory.pin(daemon.config.gpio.buzzer_pin)

        def buzzes() -> int:
            return sum(1 for state in buzzer.states if state.state)

        (store / "sim" / "camera" / "fault").write_text("hang")  # a stuck sensor
        before = buzzes()
        press_photo(daemon)
        wait_for(lambda: buzzes() >= before + 3, timeout=10, what="three pulses")
        time.sleep(0.5)
        assert buzzes() == before + 3
        (store / "sim" / "camera" / "fault").write_text("")
        assert daemon.machine.state is State.STANDBY and not daemon.cues.active
    assert records(store, "photo") == []
    assert not list((store / "open").iterdir())


def test_a_photo_cut_before_its_record_is_recovered_and_verifies(write_config,
                                                                 tmp_path: Path) -> None:
    """A power cut between the synced JPEG in open/ and its record: the next start seals it
    as found, and the store verifies."""
    config = write_config()
    store = tmp_path / "store"
    with running_daemon(config) as daemon:
        press_photo(daemon)
        wait_for(lambda: len(records(store, "photo")) == 1, timeout=10, what="the photo")
    [photo] = records(store, "photo")
    jpeg = (store / photo["payload"]["file"]).read_bytes()
    left = store / "open" / "photo-123456789.jpg"
    left.write_bytes(jpeg)
    left.chmod(0o444)
    with running_daemon(config):
        pass
    [found] = records(store, "file_recovered")
    assert found["payload"]["file"] == f"sealed/{found['seq']:08d}.jpg"
    assert found["payload"]["came_from"] == "open/photo-123456789.jpg"
    assert (store / found["payload"]["file"]).read_bytes() == jpeg
    done = verify(store)
    assert done.returncode == 0, done.stdout + done.stderr


def test_photos_go_to_the_dock_under_custody(photographed: Path, dock_pki: Any,
                                             tmp_path: Path) -> None:
    from tests.support.dockside import docked_device

    with docked_device(tmp_path, photographed, dock_pki) as device:
        photos = device.records("photo")
        result = device.pull(tmp_path / "evidence")
        assert result.ok, result.problem or result.verify.summary()
        [custody] = device.records("custody")
    folder = tmp_path / "evidence" / "TEST-0001"
    held = {(s["seq"], s["sha256"]) for s in custody["payload"]["segments"]}
    for photo in photos:
        assert photo["seq"] in result.fetched
        assert (photo["seq"], photo["payload"]["sha256"]) in held
        assert (folder / photo["payload"]["file"]).read_bytes() == \
            (photographed / photo["payload"]["file"]).read_bytes()
