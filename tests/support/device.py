"""A small, fast simulated device for tests, and a daemon running it in-process."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config import Config, load_config
from agent.device.daemon import Daemon
from agent.device.state import Shutdown
from agent.evidence.chain import read_bodies

FAST_DEVICE = """
[device]
id = "TEST-0001"
officer = "OFC-7"

[store]
path = "{store}"
reserve_bytes = {reserve_bytes}
resume_free_bytes = {resume_free_bytes}

[camera]
backend = "sim"
width = {width}
height = {height}
fps = 30
keyframe_interval = {gop}
bitrate = {bitrate}
realtime = {realtime}
stall_s = {stall_s}
restarts_before_exit = {restarts_before_exit}

[audio]
enabled = true
backend = "{audio_backend}"
sample_rate = 48000

[recorder]
segment_seconds = {segment_seconds}
flush_interval = 0.5
pre_event_seconds = {pre_event_seconds}
pre_event_audio = false
same_incident_s = {same_incident_s}

[gpio]
pin_factory = "mock"
stop_hold_seconds = 0.5
audio_pin = 26
photo_pin = 16

[selfcheck]
run_at_start = false
export_deadline_hours = {export_deadline_hours}

[voice]
notice_on_record = {notice}
languages = {languages}

[voice_note]
wait_s = {note_wait}
silence_s = {note_silence}
max_s = {note_max}
reminder_interval_s = {note_reminder}

[cues]
reminder_interval_s = {reminder}
check_interval_s = {check_interval}
storage_low_minutes = {storage_low_minutes}

{extra}
"""

DEFAULTS = {"width": 320, "height": 240, "bitrate": 400_000, "gop": 15, "realtime": "false",
            "segment_seconds": 1.0, "pre_event_seconds": 2.0,
            "export_deadline_hours": 24, "notice": "false", "audio_backend": "sim",
            "languages": '["zh", "en"]', "reminder": 120, "check_interval": 10,
            "storage_low_minutes": 60, "note_wait": 10, "note_silence": 2.0, "note_max": 120,
            "note_reminder": 300, "reserve_bytes": 1 << 20, "resume_free_bytes": 4 << 20,
            "stall_s": 3.0, "restarts_before_exit": 5, "same_incident_s": 600, "extra": ""}


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
        assert not thread.is_alive(), f"daemon did not shut down\n{thread_stacks()}"


def thread_stacks() -> str:
    """Every thread's stack in this process, for a failure message."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(f"Thread {names.get(ident, ident)} (most recent call last):\n"
                     + "".join(traceback.format_stack(frame))
                     for ident, frame in sys._current_frames().items())


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "",
             interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(interval)


BODYCAM = [sys.executable, "-m", "agent"]
STACK_DUMP = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$",
                        re.MULTILINE)


class DaemonProcess(subprocess.Popen[bytes]):
    """`bodycam run` with its stdout and stderr in `log` and Python's faulthandler on: a
    `wait` that times out fails with the end of that log and the stacks of all its threads
    (SIGUSR1, which `bodycam run` answers with a dump and goes on; SIGABRT if it does not),
    and kills it."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 **popen: Any) -> None:
        self.log = log
        with log.open("ab") as out:
            super().__init__(args, stdout=out, stderr=subprocess.STDOUT,
                             env={**(os.environ if env is None else env),
                                  "PYTHONFAULTHANDLER": "1"}, **popen)

    def wait(self, timeout: float | None = None) -> int:
        try:
            return super().wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = self.thread_stacks()
            self.kill()
            super().wait()
            raise AssertionError(f"the daemon (pid {self.pid}) did not exit within {timeout} s "
                                 f"(killed after its stacks were taken)\n{stacks}") from None

    def thread_stacks(self) -> str:
        """Ask for a dump of every thread's stack; the log's last lines before it, and it."""
        before = self.log.stat().st_size
        for signum in (signal.SIGUSR1, signal.SIGABRT):
            if self.poll() is not None:
                break
            self.send_signal(signum)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not STACK_DUMP.search(self._since(before)):
                time.sleep(0.05)
            if STACK_DUMP.search(self._since(before)):
                break
        return self.tail(before)

    def tail(self, since: int | None = None, lines: int = 60) -> str:
        """The log from byte `since` on (default: nothing), after `lines` lines before it."""
        text = self.log.read_bytes()
        since = len(text) if since is None else since
        head = text[:since].decode(errors="replace").splitlines()[-lines:]
        return (f"--- {self.log} (last {len(head)} lines, then what followed) ---\n"
                + "\n".join([*head, text[since:].decode(errors="replace")]))

    def _since(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")


def spawn_daemon(config_path: Path, store: Path) -> DaemonProcess:
    """`bodycam run` as its own process, returned once its control socket answers. Its
    output is in daemon-<n>.log beside the config (one file per process spawned)."""
    socket = store / "control.sock"
    socket.unlink(missing_ok=True)  # a SIGKILLed daemon leaves its socket behind
    log = next(path for n in itertools.count(1)
               if not (path := config_path.parent / f"daemon-{n}.log").exists())
    daemon = DaemonProcess([*BODYCAM, "run", "--config", str(config_path)], log)
    try:
        wait_for(lambda: socket.exists() or daemon.poll() is not None, timeout=30,
                 what="the daemon's control socket")
    except AssertionError as exc:
        stacks = daemon.thread_stacks()
        daemon.kill()
        daemon.wait()
        raise AssertionError(f"{exc}\n{stacks}") from None
    if not socket.exists():
        raise AssertionError(f"the daemon exited with {daemon.returncode} before its control "
                             f"socket answered\n{daemon.tail(lines=60)}")
    return daemon


def trigger_start(config_path: Path) -> None:
    subprocess.run([*BODYCAM, "trigger", "start", "--config", str(config_path)], check=True,
                   capture_output=True, timeout=30)


def open_recordings(store: Path) -> set[int]:
    """Recordings started and not (yet) stopped, by the seq of their record_start."""
    chain = store / "chain.jsonl"
    bodies = read_bodies(chain) if chain.exists() else []
    started = {b["seq"] for b in bodies if b["type"] == "record_start"}
    return started - {b["payload"]["recording"] for b in bodies if b["type"] == "record_stop"}


def wall_seconds(stamp: str) -> float:
    """A chain time stamp as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def record_segments(config_path: Path, segments: int) -> Config:
    """Press, record until `segments` are sealed, shut down; returns the config used."""
    config, _ = load_config(config_path)
    with running_daemon(config_path) as daemon:
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= segments,
                 what=f"{segments} sealed segments")
    return config
