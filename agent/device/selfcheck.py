"""The pre-shift self-check (Art. 12): is this device fit to record a whole shift?

Every item is measured, compared with its threshold and reported pass / warn /
fail with both figures, so the officer and the custodian see why. A check that
raises is itself a failed item: the self-check never crashes and never stops a
recording from starting.
"""

from __future__ import annotations

import enum
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.config import Config
from agent.device.chain_index import ChainIndex
from agent.device.offload.custody import Ledger, export_backlog
from agent.evidence.keys import PRIVATE_NAME, load_or_create_device_key
from agent.evidence.store import Store
from agent.evidence.verify import verify_tail
from hal.audio import AudioError, Microphone, Speaker, open_microphone, open_speaker, rms_dbfs
from hal.battery import Battery, projected_runtime_s
from hal.camera.mode import recording_bitrate, video_mode
from hal.clock import NTP_PHASE_LIMIT_US, KernelClock, SimulatedClock
from hal.gnss import Gnss
from hal.storage import free_bytes, probe_storage, recording_hours

SILENCE_DBFS = -70.0
TAIL_RECORDS = 64


class Status(enum.IntEnum):
    """Ordered by severity; the value is the command's exit code."""

    PASS = 0
    WARN = 1
    FAIL = 2


# An absent part fails its item, except the battery gauge: a body camera records without
# knowing its charge, but not without its camera, microphone, speaker or button.
ABSENT_STATUS = {"camera": Status.FAIL, "microphone": Status.FAIL, "speaker": Status.FAIL,
                 "button and LEDs": Status.FAIL, "battery": Status.WARN}


@dataclass(frozen=True)
class CheckItem:
    name: str
    status: Status
    value: str
    threshold: str

    def as_record(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.name.lower(), "value": self.value,
                "threshold": self.threshold}


@dataclass(frozen=True)
class SelfCheckResult:
    items: list[CheckItem]

    @property
    def overall(self) -> Status:
        return max((item.status for item in self.items), default=Status.PASS)

    @property
    def not_passed(self) -> list[CheckItem]:
        return [item for item in self.items if item.status is not Status.PASS]

    def as_record(self) -> dict[str, Any]:
        return {"overall": self.overall.name.lower(),
                "items": [item.as_record() for item in self.items]}

    def render(self) -> str:
        width = max(len(item.name) for item in self.items)
        lines = [f"{item.status.name:<4}  {item.name:<{width}}  {item.value}  "
                 f"(threshold: {item.threshold})" for item in self.items]
        lines.append(f"self-check: {self.overall.name}")
        return "\n".join(lines)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SelfCheckResult:
        return cls([CheckItem(i["name"], Status[i["status"].upper()], i["value"], i["threshold"])
                    for i in record["items"]])


@dataclass
class DeviceUnderCheck:
    """The parts the check looks at; the daemon passes its live ones."""

    config: Config
    store: Store
    frames_delivered: Callable[[], int]
    microphone: Microphone | None
    speaker: Speaker | None
    controls_present: Callable[[], str]
    battery: Battery | None
    clock: KernelClock | SimulatedClock
    absent: dict[str, str]   # part -> why it could not be opened
    ledger: Ledger           # the daemon's running custody ledger
    index: ChainIndex        # where the chain's tail starts, and the key rotations before it
    gnss: Gnss | None = None


def device_under_check(config: Config, store: Store, clock: KernelClock | SimulatedClock,
                       battery: Battery | None, ledger: Ledger, index: ChainIndex,
                       frames_delivered: Callable[[], int],
                       button_pressed: Callable[[], bool],
                       absent: dict[str, str] | None = None,
                       gnss: Gnss | None = None) -> DeviceUnderCheck:
    """The parts to check: the caller's live ones, and the audio opened here (a device that
    cannot be opened is an absent part, with the reason)."""
    absent = dict(absent or {})
    microphone = speaker = None
    if config.audio.enabled:
        try:
            microphone = open_microphone(config.audio)
        except AudioError as exc:
            absent["microphone"] = str(exc)
    try:
        speaker = open_speaker(config.audio)
    except AudioError as exc:
        absent["speaker"] = str(exc)
    return DeviceUnderCheck(
        config=config, store=store, frames_delivered=frames_delivered,
        microphone=microphone, speaker=speaker,
        controls_present=lambda: "pressed" if button_pressed() else "released",
        battery=battery, clock=clock, absent=absent, ledger=ledger, index=index, gnss=gnss)


def run_selfcheck(device: DeviceUnderCheck) -> SelfCheckResult:
    checks: list[tuple[str, Callable[[DeviceUnderCheck], CheckItem]]] = [
        ("camera", _camera), ("microphone", _microphone), ("speaker", _speaker),
        ("button and LEDs", _controls), ("battery", _battery), ("storage", _storage),
        ("store writable", _store_writable), ("clock", _clock), ("device key", _key),
        ("chain tail", _chain_tail), ("export deadline", _export_deadline),
        ("location", _location),
    ]
    items = []
    for name, check in checks:
        if name in device.absent and name in ABSENT_STATUS:
            items.append(CheckItem(name, ABSENT_STATUS[name], f"absent: {device.absent[name]}",
                                   f"a working {name}"))
            continue
        try:
            items.append(check(device))
        except Exception as exc:  # a broken check is a failed item, never a crash
            items.append(CheckItem(name, Status.FAIL, f"check failed: {exc}", "runs"))
    return SelfCheckResult(items)


def _camera(device: DeviceUnderCheck) -> CheckItem:
    fps = video_mode(device.config).fps
    before = device.frames_delivered()
    deadline = time.monotonic() + 2.0
    while device.frames_delivered() - before < fps // 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    delivered = device.frames_delivered() - before
    status = Status.PASS if delivered >= fps // 2 else Status.FAIL
    return CheckItem("camera", status, f"{delivered} frames in at most 2 s",
                     f">= {fps // 2} frames")


def _microphone(device: DeviceUnderCheck) -> CheckItem:
    if device.microphone is None:
        return CheckItem("microphone", Status.WARN, "audio disabled", "a microphone")
    blocks: list[np.ndarray] = []
    device.microphone.start(lambda pcm, _ns: blocks.append(pcm.copy()))
    time.sleep(0.5)
    device.microphone.stop()
    if not blocks:
        return CheckItem("microphone", Status.FAIL, "no audio in 0.5 s", "audio arrives")
    level = rms_dbfs(np.concatenate(blocks))
    # Warn only: a quiet room is not a fault, but a dead microphone looks the same.
    status = Status.PASS if level > SILENCE_DBFS else Status.WARN
    return CheckItem("microphone", status, f"{level:.1f} dBFS", f"> {SILENCE_DBFS:g} dBFS")


def _speaker(device: DeviceUnderCheck) -> CheckItem:
    if device.speaker is None:
        return CheckItem("speaker", Status.FAIL, "no speaker", "a speaker")
    rate = 22050
    t = np.arange(int(rate * 0.15)) / rate
    beep = (0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]
    playback = device.speaker.play(beep, rate)
    played_ms = (playback.ended_ns - playback.started_ns) / 1e6
    status = Status.PASS if played_ms >= 100 else Status.FAIL
    return CheckItem("speaker", status, f"played {played_ms:.0f} ms of a 150 ms beep",
                     ">= 100 ms played")


def _controls(device: DeviceUnderCheck) -> CheckItem:
    state = device.controls_present()
    status = Status.PASS if state == "released" else Status.WARN
    return CheckItem("button and LEDs", status, f"present, button {state}",
                     "present, button released")


def _battery(device: DeviceUnderCheck) -> CheckItem:
    config = device.config
    shift_s = config.selfcheck.shift_hours * 3600
    if device.battery is None:
        return CheckItem("battery", Status.WARN, "no battery gauge configured",
                         f"runtime >= {config.selfcheck.shift_hours:g} h")
    state = device.battery.state()
    runtime = projected_runtime_s(state, config.battery)
    if state.percent is None or runtime is None:
        return CheckItem("battery", Status.WARN, f"level unknown ({state.source})",
                         f"runtime >= {config.selfcheck.shift_hours:g} h")
    value = f"{state.percent:.0f} %, about {runtime / 3600:.1f} h of recording ({state.status})"
    threshold = (f"runtime >= {config.selfcheck.shift_hours:g} h (shift), fail under half or "
                 f"<= {config.battery.low_percent:g} %")
    if state.percent <= config.battery.low_percent or runtime < shift_s / 2:
        status = Status.FAIL
    elif runtime < shift_s:
        status = Status.WARN
    else:
        status = Status.PASS
    return CheckItem("battery", status, value, threshold)


def _storage(device: DeviceUnderCheck) -> CheckItem:
    config = device.config
    free = free_bytes(device.store.root)
    hours = recording_hours(free, recording_bitrate(config))
    shift = config.selfcheck.shift_hours
    status = Status.PASS if hours >= shift else Status.FAIL
    return CheckItem("storage", status,
                     f"{free / 1e9:.2f} GB free, about {hours:.1f} h at "
                     f"{recording_bitrate(config) / 1e6:.2f} Mbit/s", f">= {shift:g} h (shift)")


def _store_writable(device: DeviceUnderCheck) -> CheckItem:
    state = probe_storage(device.store.root)
    if state.probe_ok and not state.read_only:
        return CheckItem("store writable", Status.PASS, "write, fsync, read back: ok",
                         "write, fsync and read back")
    return CheckItem("store writable", Status.FAIL,
                     "read-only" if state.read_only else f"probe failed: {state.probe_error}",
                     "write, fsync and read back")


def _clock(device: DeviceUnderCheck) -> CheckItem:
    state = device.clock.state()
    limit_ms = device.config.clock.max_error_ms
    threshold = (f"synchronised (kernel, or chrony with a reference), max error under "
                 f"{min(limit_ms, NTP_PHASE_LIMIT_US / 1000):g} ms")
    ok = state.trusted(limit_ms)
    return CheckItem("clock", Status.PASS if ok else Status.FAIL,
                     state.describe(), threshold)


def _key(device: DeviceUnderCheck) -> CheckItem:
    path = device.store.keys / PRIVATE_NAME
    if not path.exists():
        return CheckItem("device key", Status.FAIL, f"{path} missing", "present, mode 0600")
    mode = stat.S_IMODE(path.stat().st_mode)
    load_or_create_device_key(device.store.keys)
    return CheckItem("device key", Status.PASS, f"present, mode {mode:04o}", "present, mode 0600")


def _chain_tail(device: DeviceUnderCheck) -> CheckItem:
    tail, before = device.index.tail(TAIL_RECORDS)
    report = verify_tail(device.store.root, tail, before,
                         device.index.rotation_lines(tail[0][0] if tail else 1))
    threshold = f"the last {TAIL_RECORDS} records and their segments verify"
    if report.ok:
        return CheckItem("chain tail", Status.PASS, f"{report.records} records verify", threshold)
    return CheckItem("chain tail", Status.FAIL, str(report.findings[0]), threshold)


def _export_deadline(device: DeviceUnderCheck) -> CheckItem:
    """Art. 20: footage leaves the device the same day; sealed and still here means not out."""
    backlog = export_backlog(device.ledger, device.config.selfcheck.export_deadline_hours)
    threshold = f"no sealed footage older than {backlog.deadline_h:g} h"
    if backlog.age_h is None:
        return CheckItem("export deadline", Status.PASS, "no sealed footage on the device",
                         threshold)
    return CheckItem("export deadline", Status.FAIL if backlog.overdue else Status.PASS,
                     f"oldest sealed footage {backlog.age_h:.1f} h old", threshold)


def _location(device: DeviceUnderCheck) -> CheckItem:
    """A location is evidence, not a condition of recording: without one, only a warning."""
    threshold = "a fix, if a GNSS receiver is configured"
    if device.gnss is None:
        return CheckItem("location", Status.PASS, "no GNSS receiver configured", threshold)
    fix = device.gnss.last_fix()
    if fix is None:
        return CheckItem("location", Status.WARN, f"no fix: {device.gnss.describe()}",
                         threshold)
    age_s = (time.monotonic_ns() - fix.received_ns) / 1e9
    return CheckItem("location", Status.PASS,
                     f"{fix.mode}D fix from {fix.source}, {age_s:.1f} s old", threshold)
