"""systemd: the unit verifies, and `bodycam run` speaks sd_notify to a socket the test owns:
READY, WATCHDOG while healthy, none once the recorder hangs, and STOPPING; after the kill
and restart that systemd would do, the gap is sealed as a `watchdog` interruption. A camera
that cannot be restarted ends the daemon by itself, and the restart seals that gap too."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.evidence.chain import read_bodies
from tests.support.device import (
    BODYCAM,
    DaemonProcess,
    open_recordings,
    trigger_start,
    wait_for,
    write_device_config,
)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "bodycam.service"
WATCHDOG_USEC = 3_000_000


def verify_unit(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on a copy whose ExecStart points at this checkout's bodycam
    (verify insists that the program exists)."""
    bodycam = shutil.which("bodycam", path=str(Path(sys.executable).parent))
    assert bodycam, "the package is not installed in this environment"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/bodycam/.venv/bin/bodycam", bodycam))
    return subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    result = verify_unit(UNIT, tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=20", "Restart=on-failure",
                 "User=bodycam", "ProtectSystem=strict", "ReadWritePaths=/var/lib/bodycam",
                 "NoNewPrivileges=yes", "Wants=time-sync.target"):
        assert line in text.splitlines()
    assert "Requires=time-sync.target" not in text


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_verify_catches_a_misspelt_hardening_key(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is a warning the test sees."""
    bad = tmp_path / "bad" / "bodycam.service"
    bad.parent.mkdir()
    bad.write_text(UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    assert "Unknown key" in verify_unit(bad, tmp_path).stderr


class NotifySocket:
    """The socket systemd would own: every datagram the daemon sends, with when it came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def pump(self, seconds: float = 0.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.messages.append((time.monotonic(), self._sock.recv(4096).decode()))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return

    def wait_for(self, line: str, timeout: float = 30.0) -> float:
        """When a message holding `line` arrived (waiting for it if need be)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, message in self.messages:
                if line in message.splitlines():
                    return at
            self.pump(0.1)
        raise AssertionError(f"no {line!r} within {timeout} s; got {self.messages}")

    def pings(self, since: float) -> list[float]:
        return [at for at, message in self.messages if at >= since and message == "WATCHDOG=1"]

    def close(self) -> None:
        self._sock.close()


def run_under_systemd(config: Path, notify: NotifySocket, log: Path) -> DaemonProcess:
    """`bodycam run` as systemd starts it for the unit: NOTIFY_SOCKET and WATCHDOG_USEC set."""
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    return DaemonProcess(
        [*BODYCAM, "run", "--config", str(config)], log, env=env, cwd=log.parent,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))


def test_the_watchdog_fires_when_the_recorder_hangs_and_the_gap_is_sealed(
        tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = write_device_config(tmp_path / "device.toml", store, realtime="true")
    notify = NotifySocket(tmp_path / "notify")
    log = tmp_path / "daemon.log"
    daemon = run_under_systemd(config, notify, log)
    try:
        ready = notify.wait_for("READY=1")
        status = next(m for _, m in notify.messages if "READY=1" in m)
        assert "STATUS=standby" in status.splitlines()[1]
        trigger_start(config)
        notify.wait_for("STATUS=recording, health ok")
        notify.pump(2.5)
        beat = WATCHDOG_USEC / 1e6 / 3
        assert len(notify.pings(ready)) >= 2, notify.messages

        # The card stops answering: the segment writer blocks in its next write.
        (store / "sim" / "storage" / "fault").write_text("hang")
        deadline = time.monotonic() + 10
        while not any("STATUS=hung:" in m for _, m in notify.messages):
            assert time.monotonic() < deadline, notify.messages
            notify.pump(0.1)
        hung_at = next(at for at, m in notify.messages if "STATUS=hung:" in m)
        notify.pump(WATCHDOG_USEC / 1e6 + beat)
        assert notify.pings(hung_at) == [], "pings went on while the recorder was hung"
        assert (store / "watchdog-withheld").exists()
        # WatchdogSec passed without a ping: systemd sends SIGABRT (WatchdogSignal=).
        daemon.send_signal(signal.SIGABRT)
        assert daemon.wait(30) == -signal.SIGABRT
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    # Restart=on-failure: systemd starts it again; the card works again after the reset.
    (store / "sim" / "storage" / "fault").unlink()
    notify.messages.clear()
    daemon = run_under_systemd(config, notify, log)
    try:
        notify.wait_for("READY=1")
        wait_for(lambda: any(b["type"] == "interruption"
                             for b in read_bodies(store / "chain.jsonl")),
                 timeout=30, what="the interruption sealed on resume")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        notify.pump(0.2)
        notify.wait_for("STOPPING=1", timeout=1)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()

    bodies = read_bodies(store / "chain.jsonl")
    gap = next(b["payload"] for b in bodies if b["type"] == "interruption")
    assert gap["cause"] == "watchdog", gap
    assert "the segment writer stuck for" in gap["detail"]
    assert gap["recording_after"] is not None and gap["recording_before"] is not None
    assert not (store / "watchdog-withheld").exists()
    assert bodies[-1]["type"] == "shutdown"


def test_a_camera_that_cannot_be_restarted_ends_the_daemon_and_the_restart_resumes(
        tmp_path: Path) -> None:
    """picamera2's dead camera thread holds the camera until the process ends: after
    [camera] restarts_before_exit failed restarts the daemon ends by itself, non-zero and
    not 2, so that Restart=on-failure starts it again; that start seals the gap from the
    last frame on disk as `camera_restart_failed` and resumes recording."""
    store = tmp_path / "store"
    config = write_device_config(tmp_path / "device.toml", store, realtime="true",
                                 stall_s=0.5, restarts_before_exit=2, note_max=1)
    notify = NotifySocket(tmp_path / "notify")
    log = tmp_path / "daemon.log"
    fault = store / "sim" / "camera" / "fault"
    daemon = run_under_systemd(config, notify, log)
    try:
        notify.wait_for("READY=1")
        trigger_start(config)
        wait_for(lambda: any(b["type"] == "segment_sealed"
                             for b in read_bodies(store / "chain.jsonl")),
                 timeout=30, what="a first segment")
        fault.write_text("dead")  # no more frames, and every reopen fails "busy"
        status = daemon.wait(60)
        notify.wait_for("STOPPING=1", timeout=1)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert status not in (0, 2), f"exit {status}: systemd would not restart it\n{daemon.tail()}"
    text = log.read_text()
    assert "restarting the camera (attempt 2)" in text
    assert "restarting the camera (attempt 3)" not in text
    marker = json.loads((store / "camera-restart-failed").read_text())
    [left_open] = marker["gaps"]
    bodies = read_bodies(store / "chain.jsonl")
    [first] = [b for b in bodies if b["type"] == "record_start"]
    assert left_open["recording_before"] == first["seq"]
    assert bodies[-1]["type"] == "shutdown"
    assert bodies[-1]["payload"]["reason"].startswith("camera_restart_failed")
    assert not open_recordings(store), "the camera fault had stopped the recording"

    # Restart=on-failure: systemd starts it again, and the new process gets the camera.
    fault.unlink()
    sealed_before = sum(b["type"] == "segment_sealed" for b in bodies)
    daemon = run_under_systemd(config, notify, log)
    try:
        notify.wait_for("READY=1")
        wait_for(lambda: sum(b["type"] == "segment_sealed"
                             for b in read_bodies(store / "chain.jsonl")) > sealed_before,
                 timeout=30, what="a segment after the restart")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()

    verified = subprocess.run([*BODYCAM, "verify", "--config", str(config)],
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    bodies = read_bodies(store / "chain.jsonl")
    [gap] = [b["payload"] for b in bodies if b["type"] == "interruption"]
    assert gap["cause"] == "camera_restart_failed", gap
    assert "no frame after 2 camera restarts" in gap["detail"]
    assert "camera_fault" in gap["detail"]
    starts = {b["seq"]: b for b in bodies if b["type"] == "record_start"}
    assert gap["recording_before"] == first["seq"]
    resumed = starts[gap["recording_after"]]
    assert resumed["payload"]["trigger"] == "resume_after_interruption"
    # From the last frame on disk to the recording that resumed on the new camera.
    last = [b["payload"] for b in bodies if b["type"] == "segment_sealed"
            and b["payload"]["recording"] == first["seq"]][-1]
    assert gap["last_segment"] == last["file"]
    last_frame_ns = (first["payload"]["media_origin_mono_ns"]
                     + last["video"]["last_pts_us"] * 1000)
    assert abs(gap["start_mono_ns"] - last_frame_ns) < 200_000_000, (gap, last)
    assert gap["start_boot_id"] == resumed["boot_id"]
    assert gap["end_mono_ns"] >= resumed["mono_ns"]
    assert any(b["type"] == "segment_sealed" and b["payload"]["recording"] == resumed["seq"]
               for b in bodies), "recording resumed after the gap"
    assert not (store / "camera-restart-failed").exists()
