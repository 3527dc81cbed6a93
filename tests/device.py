"""A small, fast simulated device for tests, and a daemon running it in-process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
backend = "{audio_backend}"
sample_rate = 48000

[recorder]
segment_seconds = {segment_seconds}
flush_interval = 0.5
pre_event_seconds = {pre_event_seconds}
pre_event_audio = false

[gpio]
pin_factory = "mock"
stop_hold_seconds = 0.5

[selfcheck]
run_at_start = false
export_deadline_hours = {export_deadline_hours}

[voice]
notice_on_record = {notice}
languages = {languages}

[voice_note]
wait_s = {note_wait}
silence_s = {note_silence}

[cues]
reminder_interval_s = {reminder}
check_interval_s = {check_interval}
storage_low_minutes = {storage_low_minutes}
"""

DEFAULTS = {"gop": 15, "realtime": "false", "segment_seconds": 1.0, "pre_event_seconds": 2.0,
            "export_deadline_hours": 24, "notice": "false", "audio_backend": "sim",
            "languages": '["zh", "en"]', "reminder": 120, "check_interval": 10,
            "storage_low_minutes": 60, "note_wait": 10, "note_silence": 2.0}


def write_device_config(path: Path, store: Path, **values: object) -> Path:
    path.write_text(FAST_DEVICE.format(**{"store": store, **DEFAULTS, **values}))
    return path


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
