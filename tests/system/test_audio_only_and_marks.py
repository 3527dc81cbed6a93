"""The GA/T 947 gestures on MockFactory pins: the audio button records sound without video,
sealed and chained like video; a short press of the record button marks the recording."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from agent.device.state import State
from agent.evidence.chain import read_bodies
from agent.evidence.verify import verify_store
from tests.support.device import (
    BODYCAM,
    open_recordings,
    running_daemon,
    spawn_daemon,
    wait_for,
)


def records(store: Path, type_: str) -> list[dict]:
    return [body for body in read_bodies(store / "chain.jsonl") if body["type"] == type_]


def streams(path: Path) -> list[str]:
    """The codec type of each stream ffprobe finds in a sealed file."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return [stream["codec_type"] for stream in json.loads(out.stdout)["streams"]]


def test_the_audio_button_records_sound_only_sealed_and_chained(write_config,
                                                                 tmp_path: Path) -> None:
    store = tmp_path / "store"
    with running_daemon(write_config(notice="true")) as daemon:
        daemon.controls.press(audio=True)
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 3, what="three segments")
        daemon.controls.press(long=True, audio=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
    [start] = records(store, "record_start")
    assert (start["payload"]["mode"], start["payload"]["trigger"]) == ("audio", "audio_button")
    assert [n["payload"]["recording"] for n in records(store, "notice_played")] == [start["seq"]]
    segments = records(store, "segment_sealed")
    assert len(segments) >= 3
    for segment in segments:
        payload = segment["payload"]
        assert payload["video"]["packets"] == 0 and payload["audio"]["packets"] > 0
        assert streams(store / payload["file"]) == ["audio"], "sound and no video"
    [stop] = records(store, "record_stop")
    assert stop["payload"]["reason"] == "button_hold" and stop["payload"]["video_frames"] == 0
    report = verify_store(store)  # the audio runs on across every cut, checked here
    assert report.ok, report.summary()
    assert report.recorded_us > 2_000_000, "the time recorded counts the sound"
    cli = subprocess.run([*BODYCAM, "verify", str(store)], capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.startswith("OK:"), cli.stdout + cli.stderr


def test_a_short_press_while_recording_seals_a_mark(write_config, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with running_daemon(write_config()) as daemon:
        daemon.controls.press()  # starts (its release is no mark)
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        first = daemon.recorder.recording_id
        daemon.controls.press()  # a short press: the mark
        wait_for(lambda: len(records(store, "mark")) == 1, timeout=5, what="the mark")
        daemon.controls.press(long=True)  # the hold that stops: no mark
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        daemon.controls.press()  # in standby a short press starts, and marks nothing
        wait_for(lambda: daemon.recorder.recording_id not in (None, first), what="recording 2")
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 2, what="segments")
    [mark] = records(store, "mark")
    assert mark["payload"] == {"recording": first, "source": "button"}
    report = verify_store(store)
    assert report.ok, report.summary()
    assert report.marks == [{"seq": mark["seq"], "wall": mark["wall"], "recording": first,
                             "source": "button"}]
    text = subprocess.run([*BODYCAM, "verify", str(store)], capture_output=True, text=True)
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"1 important mark (recording {first})" in text.stdout.splitlines()[0]
    assert f"mark: recording {first} marked important at {mark['wall']}" in text.stdout
    as_json = subprocess.run([*BODYCAM, "verify", "--json", str(store)], capture_output=True,
                             text=True)
    assert json.loads(as_json.stdout)["marks"] == report.marks


def test_bodycam_mark_and_press_audio_from_the_command_line(write_config, tmp_path: Path) -> None:
    """`bodycam mark` marks only a recording under way; `bodycam press --audio` is the audio
    button."""
    config = write_config()
    store = tmp_path / "store"

    def bodycam(*args: str) -> None:
        subprocess.run([*BODYCAM, *args, "--config", str(config)], check=True,
                       capture_output=True, timeout=60)

    with running_daemon(config) as daemon:
        bodycam("mark")  # standby: nothing to mark
        bodycam("press", "--audio")
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        bodycam("mark")
        wait_for(lambda: len(records(store, "mark")) == 1, timeout=5, what="the mark")
        bodycam("press", "--audio", "--long")
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
    [start] = records(store, "record_start")
    [mark] = records(store, "mark")
    assert start["payload"]["mode"] == "audio"
    assert mark["payload"] == {"recording": start["seq"], "source": "control"}


def test_a_sound_only_recording_cut_by_power_loss_resumes_sound_only(write_config,
                                                                     tmp_path: Path) -> None:
    """After a SIGKILL the next start seals what was open and records again at once, in the
    mode the officer chose: a privacy-sensitive sound-only recording never resumes as video."""
    config = write_config(realtime="true", segment_seconds=1.0, pre_event_seconds=0.0)
    store = tmp_path / "store"
    daemon = spawn_daemon(config, store)
    try:
        subprocess.run([*BODYCAM, "press", "--audio", "--config", str(config)], check=True,
                       capture_output=True, timeout=60)
        wait_for(lambda: bool(open_recordings(store)), timeout=30, what="recording")
        time.sleep(1.5)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        daemon = spawn_daemon(config, store)
        wait_for(lambda: len(records(store, "record_start")) == 2, timeout=30, what="resumed")
        time.sleep(1.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    first, resumed = records(store, "record_start")
    assert resumed["payload"]["trigger"] == "resume_after_interruption"
    assert (first["payload"]["mode"], resumed["payload"]["mode"]) == ("audio", "audio")
    for segment in records(store, "segment_sealed"):
        assert streams(store / segment["payload"]["file"]) == ["audio"]
    report = verify_store(store)
    assert report.ok, report.summary()
