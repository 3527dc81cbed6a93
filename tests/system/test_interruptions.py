"""Interruptions on the simulated device: a full disk, a dead camera, an empty battery, heat,
and the officer's own stop and restart; each is sealed, alarmed, and recording resumes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.device.daemon import Daemon
from agent.device.state import State
from agent.evidence.chain import read_bodies
from agent.evidence.verify import verify_store
from tests.support.device import running_daemon, wait_for


def records(store: Path, kind: str) -> list[dict]:
    return [r for r in read_bodies(store / "chain.jsonl") if r["type"] == kind]


def alarm_states(store: Path, alarm: str) -> list[bool]:
    return [r["payload"]["raised"] for r in records(store, "alarm")
            if r["payload"]["alarm"] == alarm]


def frames_in(path: Path) -> int:
    """Video frames ffprobe decodes from a file as stored."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_packets", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return int(json.loads(out.stdout)["streams"][0]["nb_read_packets"])


def assert_interruption(store: Path, cause: str) -> dict:
    """One interruption of `cause`, sealed between the recording it stopped and the next."""
    [interruption] = [r["payload"] for r in records(store, "interruption")]
    assert interruption["cause"] == cause
    stops = {r["payload"]["recording"]: r["payload"] for r in records(store, "record_stop")}
    starts = {r["seq"]: r["payload"] for r in records(store, "record_start")}
    before = interruption["recording_before"]
    assert stops[before]["reason"] == cause
    assert interruption["last_segment"] == stops[before]["last_segment"] is not None
    assert starts[interruption["recording_after"]]["trigger"] == f"resume_after_{cause}"
    assert interruption["recording_after"] > before
    assert interruption["start_mono_ns"] < interruption["end_mono_ns"]
    report = verify_store(store)
    assert report.ok, report.summary()
    assert report.recordings == 2
    return interruption


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs the test fills, mounted for this test alone."""
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs",
                              str(mountpoint)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(filesystem: Path, leave_bytes: int) -> Path:
    """Occupy all but `leave_bytes` of the filesystem, as other data would."""
    filler = filesystem / "other-data"
    stats = os.statvfs(filesystem)
    with filler.open("wb") as f:
        f.truncate(0)
        os.posix_fallocate(f.fileno(), 0, stats.f_bavail * stats.f_frsize - leave_bytes)
    return filler


def test_storage_full_stops_alarms_and_resumes(small_filesystem: Path, write_config) -> None:
    store = small_filesystem / "store"
    config = write_config(store=store, reserve_bytes=256 << 10, resume_free_bytes=2 << 20,
                          pre_event_seconds=0.0, note_max=1)
    with running_daemon(config) as daemon:
        filler = fill(small_filesystem, leave_bytes=3 << 20)
        daemon.controls.press()
        wait_for(lambda: daemon.machine.state is State.INTERRUPTED, timeout=60,
                 what="the disk to fill")
        assert daemon.status()["faults"].keys() == {"storage_full"}
        assert "storage_full" in daemon.cues.active
        assert alarm_states(store, "storage_full") == [True]
        sealed = records(store, "segment_sealed")
        last = sealed[-1]["payload"]
        assert last["write_error"] == "ENOSPC", "the last segment ends where the disk did"
        assert frames_in(store / last["file"]) > 0, "the cut-short segment still plays"
        before = verify_store(store)
        assert before.ok, before.summary()

        filler.unlink()  # the dock took footage off, say: space is back
        wait_for(lambda: daemon.machine.state is State.RECORDING, timeout=30,
                 what="recording to resume by itself")
        wait_for(lambda: len(records(store, "segment_sealed")) > len(sealed), timeout=30,
                 what="a segment after the resume")
    assert alarm_states(store, "storage_full") == [True, False]
    interruption = assert_interruption(store, "storage_full")
    assert "ENOSPC" in interruption["detail"] or "space" in interruption["detail"]
    for record in sealed:  # nothing sealed before the disk filled was touched
        assert verify_store(store).ok
        assert (store / record["payload"]["file"]).stat().st_size == record["payload"]["size"]


def press_and_wait_for_segment(daemon: Daemon, store: Path) -> None:
    daemon.controls.press()
    wait_for(lambda: records(store, "segment_sealed"), timeout=30, what="a first segment")


@pytest.mark.parametrize("fault", ["hang", "fail"])
def test_camera_fault_restarts_with_backoff_and_resumes(write_config, tmp_path: Path,
                                                        fault: str) -> None:
    store = tmp_path / "store"
    config = write_config(realtime="true", stall_s=0.5, note_max=1)
    fault_file = store / "sim" / "camera" / "fault"
    with running_daemon(config) as daemon:
        press_and_wait_for_segment(daemon, store)
        fault_file.write_text(fault)
        wait_for(lambda: daemon.machine.state is State.INTERRUPTED, timeout=10,
                 what="the stalled camera to interrupt the recording")
        assert "camera_fault" in daemon.cues.active
        wait_for(lambda: daemon.faults.camera_restarts >= 2, timeout=15,
                 what="a second restart, after the back-off")
        assert daemon.machine.state is State.INTERRUPTED, "a camera still failing stays down"
        fault_file.unlink()
        wait_for(lambda: daemon.machine.state is State.RECORDING, timeout=15,
                 what="the restarted camera to resume the recording")
        resumed = len(records(store, "segment_sealed"))
        wait_for(lambda: len(records(store, "segment_sealed")) > resumed, timeout=15,
                 what="a segment from the new camera")
    assert alarm_states(store, "camera_fault") == [True, False]
    interruption = assert_interruption(store, "camera_fault")
    # The gap begins at the last frame, before the stall was noticed.
    assert interruption["end_mono_ns"] - interruption["start_mono_ns"] >= 500_000_000


@pytest.mark.parametrize(("cause", "sensor", "bad", "good"), [
    ("battery_critical", "power_supply/BAT0/capacity", "2", "60"),
    ("overheated", "thermal_zone0/temp", "91000", "60000"),
])
def test_battery_and_heat_stop_sealed_and_resume(write_config, tmp_path: Path, cause: str,
                                                 sensor: str, bad: str, good: str) -> None:
    store = tmp_path / "store"
    with running_daemon(write_config(note_max=1)) as daemon:
        press_and_wait_for_segment(daemon, store)
        (store / "sim" / sensor).write_text(bad)
        wait_for(lambda: daemon.machine.state is State.INTERRUPTED, timeout=10,
                 what=f"{cause} to stop the recording")
        stopped = records(store, "record_stop")
        assert [r["payload"]["reason"] for r in stopped] == [cause]
        daemon.controls.press()
        assert daemon.machine.state is State.INTERRUPTED, "a press cannot override the stop"
        (store / "sim" / sensor).write_text(good)
        wait_for(lambda: daemon.machine.state is State.RECORDING, timeout=10,
                 what="recording to resume")
    assert alarm_states(store, cause) == [True, False]
    assert_interruption(store, cause)


@pytest.mark.parametrize("within", [True, False], ids=["same-incident", "new-incident"])
def test_officer_stop_and_restart(write_config, tmp_path: Path, within: bool) -> None:
    store = tmp_path / "store"
    config = write_config(same_incident_s=600 if within else 0, note_max=1)
    with running_daemon(config) as daemon:
        press_and_wait_for_segment(daemon, store)
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="the stop")
        daemon.controls.press()
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="the restart")
        if within:
            wait_for(lambda: records(store, "voice_note"), timeout=20, what="the voice note")
    interruptions = [r["payload"] for r in records(store, "interruption")]
    if not within:
        assert interruptions == []
        return
    [interruption] = interruptions
    starts = [r["seq"] for r in records(store, "record_start")]
    assert interruption["cause"] == "officer_stop_restart"
    assert (interruption["recording_before"], interruption["recording_after"]) == tuple(starts)
    [note] = [r["payload"] for r in records(store, "voice_note")]
    assert note["interruption"] == records(store, "interruption")[0]["seq"]
