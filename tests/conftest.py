"""Shared fixtures: a small, fast simulated device and a daemon running it in-process."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.config import Config, load_config
from agent.daemon import Daemon
from agent.state import Shutdown

FAST_DEVICE = """
[device]
id = "TEST-0001"
officer = "OFC-7"

[store]
path = "{store}"

[camera]
backend = "sim"
width = 320
height = 240
fps = 30
keyframe_interval = {gop}
bitrate = 400_000
realtime = {realtime}

[audio]
enabled = true
sample_rate = 48000

[recorder]
segment_seconds = {segment_seconds}
flush_interval = 0.5
pre_event_seconds = {pre_event_seconds}
pre_event_audio = false

[gpio]
pin_factory = "mock"
stop_hold_seconds = 0.5
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a fast simulated-device config; keyword arguments fill the template."""

    def write(name: str = "device.toml", **values: object) -> Path:
        fields = {"store": tmp_path / "store", "gop": 15, "realtime": "false",
                  "segment_seconds": 1.0, "pre_event_seconds": 2.0, **values}
        path = tmp_path / name
        path.write_text(FAST_DEVICE.format(**fields))
        return path

    return write


@contextmanager
def running_daemon(config_path: Path) -> Iterator[Daemon]:
    """The daemon on its own thread, shut down (sealing everything) on exit."""
    config, path = load_config(config_path)
    daemon = Daemon(config, path)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    thread.start()
    assert daemon.ready.wait(30), "daemon did not start"
    try:
        yield daemon
    finally:
        daemon.post(Shutdown("test finished"))
        thread.join(60)
        assert not thread.is_alive(), "daemon did not shut down"


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def record_segments(config_path: Path, segments: int) -> Config:
    """Press, record until `segments` are sealed, shut down; returns the config used."""
    config, _ = load_config(config_path)
    with running_daemon(config_path) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= segments,
                 what=f"{segments} sealed segments")
    return config


@pytest.fixture(scope="session")
def recorded_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one recording of at least 5 segments, recorded once per session."""
    root = tmp_path_factory.mktemp("recorded")
    config = root / "device.toml"
    config.write_text(FAST_DEVICE.format(store=root / "store", gop=15, realtime="false",
                                         segment_seconds=1.0, pre_event_seconds=2.0))
    record_segments(config, 5)
    return root / "store"


@pytest.fixture
def store_copy(recorded_store: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded store that a test may damage."""
    copy = tmp_path / "copy"
    shutil.copytree(recorded_store, copy, ignore=shutil.ignore_patterns("control.sock"))
    for path in copy.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    return copy
