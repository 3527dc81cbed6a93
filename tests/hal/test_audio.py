"""The audio HAL: real sound through a PulseAudio loopback for both PortAudio bindings,
the simulated devices, WAV loading and device choice by name."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.config import AudioConfig
from hal import audio
from hal.audio import (
    AudioError,
    SimulatedMicrophone,
    SimulatedSpeaker,
    conform,
    load_wav,
    open_microphone,
    open_speaker,
    rms_dbfs,
)

NOTICE = Path(__file__).resolve().parents[2] / "config" / "audio" / "notice-zh.wav"
BACKENDS = ["sounddevice", "pyaudio"]
MIC_RATE = 48000


def record_while_playing(backend: str) -> tuple[np.ndarray, np.ndarray, audio.Playback]:
    """Samples recorded around one playback of the notice, with each sample's capture ns."""
    config = AudioConfig(backend=backend, sample_rate=MIC_RATE, channels=1)
    speaker, microphone = open_speaker(config), open_microphone(config)
    blocks: list[tuple[int, np.ndarray]] = []
    microphone.start(lambda pcm, ns: blocks.append((ns, pcm[:, 0].copy())))
    try:
        time.sleep(0.5)
        playback = speaker.play(*load_wav(NOTICE))
        time.sleep(0.3)
    finally:
        microphone.stop()
    signal = np.concatenate([pcm for _, pcm in blocks])
    times = np.concatenate([ns + np.arange(len(pcm)) * 1e9 / MIC_RATE for ns, pcm in blocks])
    return signal, times, playback


def best_match(signal: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Offset of `reference` in `signal` and its normalised cross-correlation there."""
    n = 1 << int(np.ceil(np.log2(len(signal) + len(reference))))
    corr = np.fft.irfft(np.fft.rfft(signal, n) * np.conj(np.fft.rfft(reference, n)), n)
    offsets = len(signal) - len(reference) + 1
    energy = np.concatenate([[0.0], np.cumsum(signal.astype(np.float64) ** 2)])
    window = np.sqrt(energy[len(reference):] - energy[:offsets])
    score = corr[:offsets] / (np.linalg.norm(reference) * np.maximum(window, 1e-12))
    lag = int(np.argmax(score))
    return lag, float(score[lag])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_microphone_hears_the_speaker_when_it_says(
        backend: str, pulse_server: str) -> None:
    pytest.importorskip(backend)
    signal, times, playback = record_while_playing(backend)
    pcm, rate = load_wav(NOTICE)
    reference = conform(pcm, rate, MIC_RATE, 1)[:, 0]

    lag, score = best_match(signal, reference)

    assert score > 0.5, f"the notice is not in the recording (correlation {score:.2f})"
    heard_ms = (times[lag] - playback.started_ns) / 1e6
    assert abs(heard_ms) < 100, f"heard {heard_ms:+.1f} ms from Playback.started_ns"
    played_s = (playback.ended_ns - playback.started_ns) / 1e9
    assert played_s == pytest.approx(len(pcm) / rate, abs=0.1)
    before = signal[times < playback.started_ns - 50e6]
    assert len(before) > MIC_RATE // 4
    assert rms_dbfs(before) < -60


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_device_name_that_matches_nothing_lists_the_devices(
        backend: str, pulse_server: str) -> None:
    pytest.importorskip(backend)
    with pytest.raises(AudioError, match=r"'no-such-mic'.*available: .*'pulse'"):
        open_microphone(AudioConfig(backend=backend, input_device="no-such-mic"))
    with pytest.raises(AudioError, match=r"'no-such-speaker'.*available: .*'pulse'"):
        open_speaker(AudioConfig(backend=backend, output_device="no-such-speaker"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_device_is_found_by_part_of_its_name(
        backend: str, pulse_server: str) -> None:
    pytest.importorskip(backend)
    microphone = open_microphone(AudioConfig(backend=backend, input_device="PULSE"))
    blocks: list[int] = []
    microphone.start(lambda pcm, ns: blocks.append(len(pcm)))
    time.sleep(0.3)
    microphone.stop()
    assert blocks and set(blocks) == {MIC_RATE // audio.BLOCKS_PER_SECOND}


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_sound_is_played_at_once(backend: str, pulse_server: str) -> None:
    pytest.importorskip(backend)
    speaker = open_speaker(AudioConfig(backend=backend))
    playback = speaker.play(np.zeros((0, 1), np.float32), 22050)
    assert playback.ended_ns == playback.started_ns


def test_a_file_that_is_not_a_wav_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "notice-xx.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00not a wave at all")
    with pytest.raises(AudioError, match=r"notice-xx\.wav"):
        load_wav(bad)
    with pytest.raises(AudioError, match=r"missing\.wav"):
        load_wav(tmp_path / "missing.wav")


def test_a_float_wav_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little") \
        + (32000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    data = np.zeros(8, np.float32).tobytes()
    path.write_bytes(b"RIFF" + (4 + 8 + len(fmt) + 8 + len(data)).to_bytes(4, "little")
                     + b"WAVEfmt " + len(fmt).to_bytes(4, "little") + fmt
                     + b"data" + len(data).to_bytes(4, "little") + data)
    with pytest.raises(AudioError, match=r"float\.wav.*not a PCM WAV"):
        load_wav(path)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_of_every_width_loads_as_floats(tmp_path: Path, width: int) -> None:
    full = 1 << (8 * width - 1)
    ints = np.array([[0, -full], [full // 2, -full // 2], [full - 1, 0]], np.int64)
    stored = ints + (128 if width == 1 else 0)  # 8-bit WAV is unsigned
    raw = b"".join(int(v).to_bytes(width, "little", signed=width > 1) for v in stored.ravel())
    with wave.open(str(tmp_path / "x.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(width)
        wav.setframerate(16000)
        wav.writeframes(raw)

    pcm, rate = load_wav(tmp_path / "x.wav")

    assert rate == 16000 and pcm.dtype == np.float32 and pcm.shape == (3, 2)
    np.testing.assert_allclose(pcm, ints / full, atol=1e-6)


def test_the_shipped_notice_is_16_bit_mono_speech() -> None:
    pcm, rate = load_wav(NOTICE)
    assert pcm.shape[1] == 1 and rate == 22050
    assert len(pcm) / rate > 3 and rms_dbfs(pcm) > -30


def test_mono_is_resampled_and_spread_to_the_device() -> None:
    t = np.arange(2205) / 22050
    tone = np.sin(2 * np.pi * 441 * t).astype(np.float32)
    out = conform(tone, 22050, 48000, 2)
    assert out.shape == (4800, 2) and np.array_equal(out[:, 0], out[:, 1])
    assert rms_dbfs(out) == pytest.approx(rms_dbfs(tone), abs=0.1)


def test_the_simulated_speaker_takes_the_duration_of_the_sound() -> None:
    started = time.monotonic_ns()
    playback = SimulatedSpeaker().play(np.zeros((6615, 1), np.float32), 22050)
    assert (playback.ended_ns - playback.started_ns) / 1e6 == pytest.approx(300, abs=1)
    assert playback.started_ns >= started
    assert time.monotonic_ns() >= playback.ended_ns


def test_the_simulated_microphone_hears_a_440_hz_tone_in_real_time() -> None:
    microphone = SimulatedMicrophone(AudioConfig(sample_rate=16000, channels=2))
    blocks: list[tuple[int, int, np.ndarray]] = []
    microphone.start(lambda pcm, ns: blocks.append((time.monotonic_ns(), ns, pcm)))
    time.sleep(0.5)
    microphone.stop()

    stamps = np.array([ns for _, ns, _ in blocks])
    assert len(blocks) >= 20
    assert np.all(np.diff(stamps) == 20_000_000)
    assert all(delivered >= ns + 20_000_000 for delivered, ns, _ in blocks)
    pcm = np.concatenate([p for _, _, p in blocks])
    assert pcm.shape[1] == 2 and pcm.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(pcm[:, 0]))
    assert np.fft.rfftfreq(len(pcm), 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(-20, abs=0.2)


def test_timing_falls_back_to_latency_when_portaudio_gives_none() -> None:
    now = 10_000_000_000
    assert audio._adc_ns(now, 5.0, 4.99, 960, 48000, 0.03) == now - 10_000_000
    assert audio._adc_ns(now, 0.0, 0.0, 960, 48000, 0.03) == now - 50_000_000
    assert audio._dac_ns(now, 5.0, 5.04, 0.03) == now + 40_000_000
    assert audio._dac_ns(now, 0.0, 0.0, 0.03) == now + 30_000_000


def test_a_stream_time_on_clock_monotonic_is_taken_as_it_is() -> None:
    # ALSA hw: devices and PipeWire's plugin stamp on CLOCK_MONOTONIC: the callback's own
    # delay (now is 30 ms after PortAudio's status) must not move the block.
    now = 1_000_030_000_000
    assert audio._adc_ns(now, 1000.0, 999.99, 960, 48000, 0.03) == 999_990_000_000
    assert audio._dac_ns(now, 1000.0, 1000.04, 0.03) == 1_000_040_000_000


def test_a_device_without_a_speaker_plays_nothing_and_says_why() -> None:
    with pytest.raises(AudioError, match=r"^\[audio\] speaker = false"):
        open_speaker(AudioConfig(speaker=False))
