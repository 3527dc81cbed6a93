"""A disk that can lose power: `tests/support/powercut_fs.py` mounted, cut and mounted again.

`PowerCutDisk(root)` keeps the durable state in `root/medium` and mounts it on `root/mnt`;
`cut()` kills the file system's process (everything not yet durable is gone, and every
request in flight fails), detaches the dead mount, and returns the wall time of the cut.
`mount()` then brings up what survived. The mount is always detached on the way out, even
when a test fails, so no hung mount is left to block anything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.device import wait_for
from tests.support.powercut_fs import TRIPPED, read_durable

CHECKOUT = Path(__file__).resolve().parents[2]


def fuse_unavailable() -> str | None:
    """Why a FUSE file system cannot be mounted here, or None when it can."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    if os.geteuid() != 0:
        return "mounting a FUSE file system needs root here"
    return None


def mounted(mountpoint: Path) -> bool:
    """Whether something is mounted there, a dead FUSE mount too (os.path.ismount cannot
    stat one: ENOTCONN)."""
    target = str(mountpoint.resolve()).encode()
    with open("/proc/self/mounts", "rb") as mounts:
        return any(line.split()[1] == target for line in mounts)


def detach(mountpoint: Path) -> None:
    """Lazy unmount: the mount goes at once, whoever still holds it."""
    for command in (["fusermount3", "-u", "-z", str(mountpoint)],
                    ["umount", "-l", str(mountpoint)]):
        if not mounted(mountpoint):
            return
        subprocess.run(command, capture_output=True, timeout=30, check=False)
    if mounted(mountpoint):
        raise AssertionError(f"{mountpoint} is still mounted after a lazy unmount")


class PowerCutDisk:
    """The mount of one medium, one file-system process at a time."""

    def __init__(self, root: Path) -> None:
        self.medium = root / "medium"
        self.mountpoint = root / "mnt"
        self.state = root / "fs-state"
        self.log = root / "fs.log"
        for folder in (self.medium, self.mountpoint, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PowerCutDisk:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.cut()

    def mount(self, *crash: str) -> None:
        """Mount what the medium holds; `crash` are the process's `--crash` triggers."""
        assert self.process is None, "mounted already"
        (self.state / "tripped.json").unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.powercut_fs", str(self.medium),
                 str(self.mountpoint), "--state", str(self.state),
                 *(f"--crash={spec}" for spec in crash)],
                cwd=CHECKOUT, stdout=out, stderr=subprocess.STDOUT)
        process = self.process
        try:
            wait_for(lambda: mounted(self.mountpoint) or process.poll() is not None,
                     timeout=30, what="the power-cut file system's mount")
        finally:
            if not mounted(self.mountpoint):
                self.cut()
                raise AssertionError(f"the power-cut file system did not mount:\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")

    def cut(self) -> float:
        """Power off now: the file system's process dies with all it held; returns the wall
        time of the cut (or of the trigger that cut it already)."""
        when = time.time()
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None
        detach(self.mountpoint)
        trip = self.tripped()
        return trip["wall"] if trip else when

    def tripped(self) -> dict[str, Any] | None:
        """The trigger that cut the power by itself, with its path and wall time, if any."""
        if self.process is not None and self.process.poll() not in (None, TRIPPED):
            raise AssertionError(f"the power-cut file system died ({self.process.returncode}):"
                                 f"\n{self.log.read_text(errors='replace')[-3000:]}")
        path = self.state / "tripped.json"
        return json.loads(path.read_text()) if path.exists() else None

    def sync(self) -> None:
        """Everything durable now, as the kernel's own writeback would have made it."""
        self._signal(signal.SIGUSR1, "synced")

    def arm(self, *crash: str) -> None:
        """Arm `--crash` triggers from now on (not during a start that comes before)."""
        (self.state / "arm").write_text("".join(f"{spec}\n" for spec in crash))
        self._signal(signal.SIGUSR2, "armed")

    def _signal(self, signum: int, acknowledged_in: str) -> None:
        assert self.process is not None and self.process.poll() is None
        done = self.state / acknowledged_in
        before = done.read_text().count("\n") if done.exists() else 0
        process = self.process
        process.send_signal(signum)
        wait_for(lambda: process.poll() is not None
                 or (done.exists() and done.read_text().count("\n") > before), timeout=30,
                 what=f"the file system's answer to signal {signum}")
        self.tripped()  # raises if the file system died of something else

    def durable(self, relative: str) -> bytes | None:
        """What a cut now leaves of the file at `relative` below the mount (None: no file)."""
        return read_durable(self.medium, relative)


@contextmanager
def power_cut_disk(root: Path) -> Iterator[PowerCutDisk]:
    """A mounted PowerCutDisk, cut and detached at the end whatever happens."""
    disk = PowerCutDisk(root)
    try:
        disk.mount()
        yield disk
    finally:
        disk.cut()
