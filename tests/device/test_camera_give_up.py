"""The fault watch gives up on a camera only after [camera] restarts_before_exit restarts in
a row without a frame, only once, and only for a camera that gave frames before: a board
with no camera keeps restarting it with back-off, for the unit never stops restarting."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from agent.config import load_config
from agent.device.faults import FaultWatch
from agent.evidence.store import Store
from tests.support.device import write_device_config


class Camera:
    """What the fault watch sees of the camera: a frame count and a restart that fails
    "busy" while the camera is dead."""

    def __init__(self) -> None:
        self.frames = 0
        self.dead = False
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1
        if self.dead:
            raise OSError(errno.EBUSY, "Device or resource busy")


def watch(tmp_path: Path, camera: Camera, limit: int, gave_up: list[str]) -> FaultWatch:
    config, _ = load_config(write_device_config(tmp_path / "device.toml", tmp_path / "store",
                                                stall_s=0.5, restarts_before_exit=limit))
    return FaultWatch(config, Store(config.store_path), lambda _event: None,
                      lambda: camera.frames, camera.restart, gave_up.append, None, None)


def run(faults: FaultWatch, camera: Camera, ticks: int) -> None:
    """Ticks far enough apart that each is past any back-off (the restart's own window is
    taken from the real clock, so `now` runs ahead of it)."""
    for _ in range(ticks):
        faults.tick(time.monotonic() + 10_000)


@pytest.mark.parametrize("limit", [1, 3])
def test_gives_up_once_after_the_limit(tmp_path: Path, limit: int) -> None:
    camera, gave_up = Camera(), []
    faults = watch(tmp_path, camera, limit, gave_up)
    camera.frames = 100
    faults.tick(time.monotonic())
    camera.dead = True
    run(faults, camera, limit)
    assert (camera.restarts, gave_up) == (limit, [])
    run(faults, camera, 5)
    assert camera.restarts == limit, "no restart after giving up"
    assert gave_up == [f"no frame after {limit} camera restarts in a row"]


def test_frames_between_restarts_start_the_count_again(tmp_path: Path) -> None:
    camera, gave_up = Camera(), []
    faults = watch(tmp_path, camera, 3, gave_up)
    camera.frames = 100
    faults.tick(time.monotonic())
    camera.dead = True
    run(faults, camera, 2)
    camera.frames += 30  # one restart worked for a while, then the camera died again
    faults.tick(time.monotonic())
    run(faults, camera, 3)
    assert (camera.restarts, gave_up) == (5, [])


@pytest.mark.parametrize("limit", [0, 2], ids=["never", "no frame ever"])
def test_keeps_restarting(tmp_path: Path, limit: int) -> None:
    """0 never gives up; nor does a camera that never gave a frame (none connected)."""
    camera, gave_up = Camera(), []
    faults = watch(tmp_path, camera, limit, gave_up)
    camera.frames = 0 if limit else 100
    faults.tick(time.monotonic())
    camera.dead = True
    run(faults, camera, 20)
    assert (camera.restarts, gave_up) == (20, [])
