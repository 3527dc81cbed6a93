"""The voice note with real audio: after a power cut the device asks, listens and seals."""

from __future__ import annotations

import signal
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.config import default_config_path, load_config
from agent.device.state import State
from agent.evidence.chain import read_bodies
from agent.evidence.verify import verify_store
from hal.audio import conform, load_wav, open_speaker
from tests.support.device import running_daemon, spawn_daemon, trigger_start, wait_for
from tests.system.test_cues import buzzes
from tests.system.test_notice import correlate

# Normalised correlation of the officer's words with the sealed note: chance stays under
# 0.1; a loaded machine's PulseAudio underruns can take a true match from 0.8 to about 0.45.
SPOKEN = 0.35


def records(store: Path) -> list[dict]:
    return read_bodies(store / "chain.jsonl")


def cut_power_while_recording(config: Path, store: Path) -> None:
    daemon = spawn_daemon(config, store)
    trigger_start(config)
    wait_for(lambda: any(r["type"] == "segment_sealed" for r in records(store)), timeout=30,
             what="a sealed segment")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()


@pytest.mark.parametrize("officer_speaks", [True, False], ids=["spoken", "silent"])
def test_voice_note_after_a_power_cut(pulse_server: str, write_config, tmp_path: Path,
                                      officer_speaks: bool) -> None:
    config = write_config(realtime="true", audio_backend="sounddevice", languages='["en"]',
                          segment_seconds=1.0, pre_event_seconds=0.0, note_wait=3,
                          note_silence=1.0)
    store = tmp_path / "store"
    cut_power_while_recording(config, store)
    speech, rate = load_wav(default_config_path().parent / "audio" / "notice-en.wav")

    with running_daemon(config) as daemon:
        wait_for(daemon.voice_notes.listening.is_set, timeout=30, what="the device listening")
        if officer_speaks:
            open_speaker(load_config(config)[0].audio).play(speech, rate)
        wait_for(lambda: any(r["type"] == "voice_note" for r in records(store)), timeout=30,
                 what="the sealed voice note")
        status = daemon.status()

    chain = records(store)
    [interruption] = [r for r in chain if r["type"] == "interruption"]
    [note] = [r["payload"] for r in chain if r["type"] == "voice_note"]
    assert note["interruption"] == interruption["seq"]
    report = verify_store(store)
    assert report.ok, report.summary()
    unexplained = [n for n in report.notes if "is unexplained" in n]
    if officer_speaks:
        assert note["explained"] is True and note["ended_by"] == "silence"
        assert status["unexplained_interruptions"] == []
        assert not unexplained
        with wave.open(str(store / note["file"])) as recorded:
            pcm = np.frombuffer(recorded.readframes(recorded.getnframes()), "<i2") / 32768
        _, peak = correlate(pcm.astype(np.float32),
                            conform(speech, rate, note["sample_rate"], 1)[:, 0])
        assert peak > SPOKEN, f"the officer's words are not in the note ({peak:.2f})"
    else:
        assert note["explained"] is False and note["ended_by"] == "no_speech"
        assert status["unexplained_interruptions"] == [interruption["seq"]]
        assert unexplained == [f"interruption record {interruption['seq']} "
                               "(power_loss_or_crash) is unexplained: no voice note with "
                               "speech was sealed for it"]


def speak_into_microphone(config: Path, speech: np.ndarray, rate: int) -> None:
    """The officer talks: played into the null sink whose monitor is the microphone."""
    open_speaker(load_config(config)[0].audio).play(speech, rate)


def officer_words() -> tuple[np.ndarray, int]:
    return load_wav(default_config_path().parent / "audio" / "selfcheck-fail-en.wav")


def heard(store: Path, record: dict, speech: np.ndarray, rate: int) -> float:
    """How clearly the sealed WAV of `record` holds `speech` (normalised correlation peak)."""
    with wave.open(str(store / record["file"])) as recorded:
        pcm = np.frombuffer(recorded.readframes(recorded.getnframes()), "<i2") / 32768
    _, peak = correlate(pcm.astype(np.float32),
                        conform(speech, rate, record["sample_rate"], 1)[:, 0])
    return peak


def test_exemption_declared_by_holding_the_function_button(pulse_server: str, write_config,
                                                          tmp_path: Path) -> None:
    config = write_config(realtime="true", audio_backend="sounddevice", languages='["en"]',
                          note_wait=3, note_silence=1.0)
    store = tmp_path / "store"
    speech, rate = officer_words()
    with running_daemon(config) as daemon:
        daemon.controls.press(long=True, function=True)
        wait_for(daemon.voice_notes.listening.is_set, timeout=30, what="the device listening")
        speak_into_microphone(config, speech, rate)
        wait_for(lambda: any(r["type"] == "exemption" for r in records(store)), timeout=30,
                 what="the sealed exemption")
        assert daemon.machine.state is State.STANDBY, "an exemption records no video"
    chain = records(store)
    [exemption] = [r["payload"] for r in chain if r["type"] == "exemption"]
    assert exemption["explained"] is True and exemption["ended_by"] == "silence"
    assert heard(store, exemption, speech, rate) > SPOKEN, "the officer's reason is in the record"
    assert not [r for r in chain if r["type"] == "record_start"]
    report = verify_store(store)
    assert report.ok, report.summary()


def test_unexplained_interruption_reminds_until_explained(pulse_server: str, write_config,
                                                          tmp_path: Path) -> None:
    config = write_config(realtime="true", audio_backend="sounddevice", languages='["en"]',
                          note_wait=1.5, note_silence=1.0, note_reminder=1.0)
    store = tmp_path / "store"
    speech, rate = officer_words()
    with running_daemon(config) as daemon:
        buzzer = daemon.controls.factory.pin(daemon.config.gpio.buzzer_pin)
        daemon.controls.press()
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="the officer's stop")
        daemon.controls.press()  # again within the incident: an interruption to explain
        wait_for(lambda: any(r["type"] == "voice_note" for r in records(store)), timeout=30,
                 what="the first, silent voice note")
        [interruption] = [r["seq"] for r in records(store) if r["type"] == "interruption"]
        assert daemon.status()["unexplained_interruptions"] == [interruption]
        reminded = buzzes(buzzer)
        wait_for(lambda: buzzes(buzzer) >= reminded + 4, timeout=30,
                 what="reminders while the interruption is unexplained")

        daemon.controls.press(function=True)
        wait_for(daemon.voice_notes.listening.is_set, timeout=30, what="the device listening")
        speak_into_microphone(config, speech, rate)
        wait_for(lambda: not daemon.status()["unexplained_interruptions"], timeout=30,
                 what="the interruption to be explained")
        after = buzzes(buzzer)
        time.sleep(2.5)
        assert buzzes(buzzer) == after, "no reminder once explained"
    notes = [r["payload"] for r in records(store) if r["type"] == "voice_note"]
    assert [n["explained"] for n in notes] == [False, True]
    assert all(n["interruption"] == interruption for n in notes)
    assert heard(store, notes[1], speech, rate) > SPOKEN
    report = verify_store(store)
    assert report.ok and not [n for n in report.notes if "unexplained" in n], report.notes
