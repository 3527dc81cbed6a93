"""The spoken notice (Art. 13) is heard on the recording, at the moment its record says.

Real audio end to end: the daemon plays the notice through PortAudio into a PulseAudio
null sink, its microphone track records the sink's monitor, and the sealed segments'
AAC is decoded and cross-correlated with the notice file.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from agent.config import default_config_path
from agent.evidence.chain import read_bodies
from hal.audio import conform, load_wav
from tests.support.device import running_daemon, wait_for

RATE = 48000


def records(store: Path) -> list[dict]:
    return read_bodies(store / "chain.jsonl")


def decoded_audio(store: Path, segments: list[dict]) -> tuple[np.ndarray, float]:
    """The recording's audio track, mono, and the presentation time of its first sample."""
    blocks, first = [], None
    for segment in segments:
        with av.open(str(store / segment["file"])) as container:
            for frame in container.decode(audio=0):
                if first is None:
                    first = float(frame.pts * frame.time_base)
                blocks.append(frame.to_ndarray().mean(axis=0))
    return np.concatenate(blocks).astype(np.float32), first


def correlate(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, float]:
    """Lag of `needle` in `haystack` and the normalised height of the peak."""
    size = 1 << int(np.ceil(np.log2(len(haystack) + len(needle))))
    spectrum = np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size))
    scores = np.fft.irfft(spectrum, size)[: len(haystack) - len(needle) + 1]
    lag = int(np.argmax(scores))
    window = haystack[lag: lag + len(needle)]
    return lag, float(scores[lag] / (np.linalg.norm(window) * np.linalg.norm(needle) + 1e-12))


@pytest.mark.parametrize("backend", ["sounddevice", "pyaudio"])
def test_notice_is_on_the_recording_when_its_record_says(
        pulse_server: str, write_config, tmp_path: Path, backend: str) -> None:
    config = write_config(realtime="true", segment_seconds=2.0, notice="true",
                          audio_backend=backend, languages='["zh"]', pre_event_seconds=0.0)
    store = tmp_path / "store"
    with running_daemon(config) as daemon:
        daemon.controls.press()
        wait_for(lambda: any(r["type"] == "notice_played" for r in records(store)),
                 timeout=60, what="the notice played")
        sealed_before = daemon.recorder.stats.segments_sealed
        wait_for(lambda: daemon.recorder.stats.segments_sealed > sealed_before,
                 timeout=10, what="the segment after the notice")

    chain = records(store)
    start = next(r for r in chain if r["type"] == "record_start")
    [notice] = [r["payload"]["parts"][0] for r in chain if r["type"] == "notice_played"]
    assert notice["language"] == "zh"
    assert notice["text"] == "为保护您的合法权益，监督我们的执法行为，本次执法全程录音录像"
    segments = [r["payload"] for r in chain if r["type"] == "segment_sealed"]

    track, first_pts = decoded_audio(store, segments)
    speech, rate = load_wav(default_config_path().parent / "audio" / "notice-zh.wav")
    speech = conform(speech, rate, RATE, 1)[:, 0]
    lag, peak = correlate(track, speech)
    assert peak > 0.5, f"the notice is not on the recording (correlation {peak:.2f})"

    heard_at_ns = start["payload"]["media_origin_mono_ns"] + (first_pts + lag / RATE) * 1e9
    error_ms = (heard_at_ns - notice["started_mono_ns"]) / 1e6
    print(f"\n{backend}: correlation {peak:.2f}, heard {error_ms:+.1f} ms from the record")
    assert abs(error_ms) < 150, f"heard {error_ms:+.0f} ms from when the record says"
