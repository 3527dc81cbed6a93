"""systemd: the unit verifies, and `bodycam run` speaks sd_notify to a socket the test owns:
READY, WATCHDOG while healthy, none once the recorder hangs, and STOPPING; after the kill
and restart that systemd would do, the gap is sealed as a `watchdog` interruption."""

from __future__ import annotations

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
