"""The voice note with real audio: after a power cut the device asks, listens and seals."""

from __future__ import annotations

import signal
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.chain import read_bodies
from agent.config import default_config_path, load_config
from agent.verify import verify_store
from hal.audio import conform, load_wav, open_speaker
from tests.device import running_daemon, spawn_daemon, trigger_start, wait_for
from tests.test_notice import correlate


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
        assert peak > 0.5, f"the officer's words are not in the note ({peak:.2f})"
    else:
        assert note["explained"] is False and note["ended_by"] == "no_speech"
        assert status["unexplained_interruptions"] == [interruption["seq"]]
        assert unexplained == [f"interruption record {interruption['seq']} "
                               "(power_loss_or_crash) is unexplained: no voice note with "
                               "speech was sealed for it"]
