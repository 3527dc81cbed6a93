"""The recorder on a disk that loses power: `bodycam run` on a PowerCutDisk, cut, started again
on what survived, and accounted for. Shared by tests/system/test_power_cut_fs.py and
benchmarks/power_cut.py.

A cut kills the file system's process (or a trigger does it at an exact operation) and then the
daemon (SIGKILL): the daemon's last requests fail, so nothing after the cut reaches the medium.
Before the restart, what is durable is read from the medium itself: those chain records, and
the files they name, are what "nothing sealed is lost" is checked against.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.device import (
    BODYCAM,
    DaemonProcess,
    spawn_daemon,
    trigger_start,
    wait_for,
    wall_seconds,
    write_device_config,
)
from tests.support.powercut_disk import PowerCutDisk

POLL_S = 0.1  # reading the chain through the mount more often would load the file system
FLUSH_S = 0.5  # the test device's [recorder] flush_interval
FRAME_S = 1 / 30
# What one fdatasync may take on the power-cut file system while CI loads the machine: the L
# of the bound in docs/recorder.md (a power cut loses at most flush_interval + L + a frame).
SYNC_LATENCY_S = 0.2
BOUND_S = FLUSH_S + SYNC_LATENCY_S + FRAME_S


@dataclass
class Cut:
    """One power cut: when, how, and what was durable at that moment."""

    how: str  # "random", a trigger's spec, or "process" (the daemon killed, no power cut)
    wall: float
    durable_lines: list[bytes]
    damaged: list[str]  # files named by a durable record that were not intact at the cut
    interruption: dict[str, Any] | None = None  # the record sealed for it after the restart
    lost_s: float | None = None  # media lost: from the last packet on disk to the cut
    nothing_survived: bool = False  # no packet of the recording survived: lost_s counts from
    #                                 its record_start (a floor: its pre-event part is lost too)


@dataclass
class CutRecorder:
    """`bodycam run` (the fast simulated device, in real time, 1 s segments) on a PowerCutDisk
    whose mount is the store."""

    root: Path
    disk: PowerCutDisk = field(init=False)
    config: Path = field(init=False)
    daemon: DaemonProcess | None = None
    cuts: list[Cut] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.disk = PowerCutDisk(self.root / "disk")
        self.config = write_device_config(
            self.root / "device.toml", self.disk.mountpoint, realtime="true",
            segment_seconds=1.0, pre_event_seconds=0.0, note_wait=0.5, note_silence=0.3,
            note_max=2)

    @property
    def store(self) -> Path:
        return self.disk.mountpoint

    def chain_lines(self) -> list[bytes]:
        chain = self.store / "chain.jsonl"
        return chain.read_bytes().splitlines(keepends=True) if chain.exists() else []

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.chain_lines() if line.endswith(b"\n")]

    def interruptions(self) -> list[dict[str, Any]]:
        return [r["payload"] for r in self.records() if r["type"] == "interruption"]

    def recording(self) -> bool:
        records = self.records()
        started = {r["seq"] for r in records if r["type"] == "record_start"}
        return bool(started - {r["payload"]["recording"] for r in records
                               if r["type"] == "record_stop"})

    def start(self, press: bool = True) -> None:
        """Mount what survived (unless the disk never lost power) and start the daemon on it."""
        if self.disk.process is None:
            self.disk.mount()
        self.daemon = spawn_daemon(self.config, self.store)
        if press:
            trigger_start(self.config)

    def campaign(self, schedule: list[str], rng: random.Random,
                 progress: Callable[[int], None] = lambda done: None) -> None:
        """Record, let the store age past the kernel's writeback, then cut it as `schedule`
        says (each "random", "process" or a trigger), 0.3 to 2.5 s into each resumed
        recording, starting again on what survived each time."""
        self.start()
        wait_for(self.recording, timeout=30, what="recording", interval=POLL_S)
        time.sleep(1.0)
        self.disk.sync()  # the store is older than the kernel's writeback
        for done, how in enumerate(schedule, 1):
            self.cut(how, after_s=rng.uniform(0.3, 2.5))
            self.resume()
            progress(done)

    def cut(self, how: str = "random", after_s: float = 0.0, timeout: float = 60.0) -> Cut:
        """Cut the power `after_s` from now ("random"), or arm the trigger `how` and wait for
        it to; or ("process") kill the daemon alone `after_s` from now, the disk keeping its
        page cache: the crash the older tests model."""
        if how == "random" or how == "process":
            time.sleep(after_s)
        else:
            self.disk.arm(how)
            wait_for(lambda: self.disk.tripped() is not None, timeout=timeout,
                     what=f"the trigger {how}")
        wall = time.time() if how == "process" else self.disk.cut()
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait()
        self.daemon = None
        cut = Cut(how, wall, *self.durable_state())
        self.cuts.append(cut)
        return cut

    def durable_state(self) -> tuple[list[bytes], list[str]]:
        """The chain's whole lines on the medium, and the files its records name that are
        not there whole (size and SHA-256 as sealed)."""
        chain = self.disk.durable("chain.jsonl") or b""
        lines = [line for line in chain.splitlines(keepends=True) if line.endswith(b"\n")]
        damaged = []
        for line in lines:
            payload = json.loads(line)["payload"]
            if "file" in payload and "sha256" in payload:
                data = self.disk.durable(payload["file"])
                if data is None or hashlib.sha256(data).hexdigest() != payload["sha256"]:
                    damaged.append(f"{payload['file']}: "
                                   f"{'missing' if data is None else f'{len(data)} bytes'}")
        return lines, damaged

    def resume(self) -> None:
        """Start again after the last cut and wait until it is accounted for: the interruption
        sealed and the recording resumed. Checks that every durable record is still there."""
        cut = self.cuts[-1]
        self.start(press=False)
        lines = self.chain_lines()
        if lines[:len(cut.durable_lines)] != cut.durable_lines:
            self.findings.append(f"cut {len(self.cuts)} ({cut.how}): durable chain records "
                                 f"changed or lost across the restart")
        wait_for(lambda: len(self.interruptions()) >= len(self.cuts) and self.recording(),
                 timeout=60, what=f"the interruption of cut {len(self.cuts)} and the resumed "
                                  f"recording", interval=POLL_S)
        cut.interruption = self.interruptions()[len(self.cuts) - 1]
        if cut.interruption["start"] is not None:
            cut.lost_s = cut.wall - wall_seconds(cut.interruption["start"])
        elif cut.interruption["recording_before"] is not None:
            [start] = [r for r in self.records()
                       if r["seq"] == cut.interruption["recording_before"]]
            cut.lost_s, cut.nothing_survived = cut.wall - wall_seconds(start["wall"]), True

    def stop(self) -> None:
        """A clean shutdown, then the file system is cut (the clean shutdown made it durable)."""
        if self.daemon is not None:
            self.daemon.send_signal(signal.SIGTERM)
            code = self.daemon.wait(timeout=60)
            self.daemon = None
            assert code == 0, f"bodycam run exited {code}"

    def verify(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BODYCAM, "verify", str(self.store)], capture_output=True,
                              text=True, timeout=300)

    def close(self) -> None:
        """Whatever happened: the daemon killed, the power cut, the mount detached."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        self.daemon = None
        self.disk.cut()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
