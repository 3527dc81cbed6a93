"""The daemon's start path inside the unit's own sandbox (tests/support/sandbox.py): the unit's
working directory and environment, its read-only root with the store and the runtime
directory writable, its capability bounding set, and its SystemCallFilter= expanded from
systemd's groups and loaded with libseccomp, refused calls failing with EPERM as under
systemd.

On the shipped unit before issue 17 (no runtime directory, `adjtimex clock_settime` listed by
hand) both tests fail: `import lgpio` cannot make its FIFO in the read-only `/`, so the
buttons and LEDs come up absent, and glibc's adjtimex() issues clock_adjtime, which the
filter refused, so every record said "adjtimex failed: errno 1".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.device.control import request
from agent.evidence.chain import read_bodies
from tests.support.device import DaemonProcess, write_device_config
from tests.support.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "bodycam.service"
STORE = "/var/lib/bodycam"  # ReadWritePaths=
RUNTIME = "/run/bodycam"  # RuntimeDirectory=
CONFIG = "/etc/bodycam/config.toml"  # ExecStart='s --config

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in
                                 ("systemd-analyze", "unshare", "setpriv", "mount")),
    reason="needs root (mount namespaces), systemd-analyze and util-linux")

# The start path's system calls and files, one part at a time, as JSON.
PROBE = """
import errno, json, os, time
from pathlib import Path
report = {"cwd": os.getcwd()}
try:
    import lgpio
    report["lgpio"] = "imported"
except Exception as exc:
    report["lgpio"] = f"{type(exc).__name__}: {exc}"
report["fifos"] = sorted(path.name for path in Path(os.getcwd()).glob(".lgd-nfy*"))
report["tmp"] = sorted(os.listdir("/tmp"))
from hal.clock import KernelClock
report["clock_source"] = KernelClock().state().source
# set_wall_clock's call, on a clock that cannot be set: the kernel says EINVAL, a filter that
# refuses clock_settime says EPERM, and the host's clock is never touched.
try:
    time.clock_settime_ns(time.CLOCK_MONOTONIC, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
except OSError as exc:
    report["clock_settime"] = errno.errorcode[exc.errno]
for name, path in (("root_writable", "/usr/lib/bodycam-sandbox-test"),
                   ("store_writable", "/var/lib/bodycam/probe")):
    try:
        Path(path).write_text("written")
        report[name] = True
    except OSError as exc:
        report[name] = errno.errorcode[exc.errno]
print(json.dumps(report))
"""


def make_sandbox(tmp_path: Path, unit: Path, notify: str = "") -> tuple[Sandbox, Path]:
    """The unit's sandbox around the test's store, runtime directory and device config (the
    simulated camera and storage; the real pin factory and the kernel's clock)."""
    store, runtime, etc = tmp_path / "store", tmp_path / "run", tmp_path / "etc"
    for folder in (store, runtime, etc):
        folder.mkdir()
    config = write_device_config(etc / "config.toml", Path(STORE),
                                 extra='[clock]\nbackend = "kernel"\n')
    config.write_text(config.read_text().replace('pin_factory = "mock"',
                                                 'pin_factory = "lgpio"'))
    environment = {"PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    if notify:
        environment["NOTIFY_SOCKET"] = notify
    sandbox = Sandbox.from_unit(unit, {STORE: store, RUNTIME: runtime, "/etc/bodycam": etc},
                                tmp_path / "scratch", environment)
    (tmp_path / "scratch").mkdir()
    return sandbox, store


def test_the_start_path_s_calls_pass_the_unit_s_filter_and_file_system(tmp_path: Path) -> None:
    sandbox, store = make_sandbox(tmp_path, UNIT)
    done = subprocess.run(sandbox.command([sys.executable, "-c", PROBE]), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["root_writable"] == "EROFS", "the root is not read-only: not the unit's view"
    assert report["store_writable"] is True and (store / "probe").read_text() == "written"
    assert report["fifos"], (report, done.stderr)  # lgpio's notification FIFO, in LG_WD
    # PrivateTmp=: none of the host's /tmp, but the test's checkout and venv where they live
    assert not set(report["tmp"]) - {Path(p).parts[2] for p in sandbox.host_paths}, report
    assert {key: report[key] for key in ("cwd", "lgpio", "clock_source", "clock_settime")} == {
        "cwd": RUNTIME, "lgpio": "imported", "clock_source": "kernel",
        "clock_settime": "EINVAL"}, done.stderr


def test_the_daemon_starts_and_records_in_the_unit_s_sandbox(tmp_path: Path) -> None:
    """`bodycam run` to READY, a recording (an external trigger: the controls are absent for
    want of a Pi) sealed segment by segment, and a clean SIGTERM: the camera open, the
    records' clock read from the kernel, and a chain `bodycam verify` accepts."""
    name = f"bodycam-sandbox-{os.getpid()}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(f"\0{name}")
    notify.settimeout(1.0)
    sandbox, store = make_sandbox(tmp_path, UNIT, notify=f"@{name}")
    chain = store / "chain.jsonl"
    log = tmp_path / "daemon.log"
    daemon = DaemonProcess(sandbox.command([sys.executable, "-m", "agent", "run",
                                            "--config", CONFIG]), log)
    try:
        status = ""
        deadline = time.monotonic() + 60
        while "READY=1" not in status.splitlines():
            assert time.monotonic() < deadline and daemon.poll() is None, daemon.tail(0)
            try:
                status = notify.recv(4096).decode()
            except TimeoutError:
                continue
        assert request(store / "control.sock", {"cmd": "trigger", "source": "test"})["ok"]
        deadline = time.monotonic() + 60
        while sum(body["type"] == "segment_sealed" for body in read_bodies(chain)) < 2:
            assert time.monotonic() < deadline and daemon.poll() is None, daemon.tail(0)
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, daemon.tail(0)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        notify.close()

    text = log.read_text()
    assert ".lgd-nfy" not in text and "Read-only file system" not in text, text
    absent = [line for line in text.splitlines() if "absent, recording without it" in line]
    assert not any("camera" in line for line in absent), absent
    bodies = read_bodies(chain)
    assert bodies[-1]["type"] == "shutdown"
    assert [body["type"] for body in bodies].count("record_stop") == 1
    verified = subprocess.run([sys.executable, "-m", "agent", "verify", str(store)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert {body["clock"]["source"] for body in bodies} == {"kernel"}, bodies[-1]["clock"]
