"""Device choice by name, as the Pi's config/default.toml sets it, on the PulseAudio null sink."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.config import AudioConfig
from hal.audio import AudioError, open_microphone, open_speaker
from tests.hal.test_gpio import production_config

BACKENDS = ["sounddevice", "pyaudio"]


def pi_audio(tmp_path: Path, backend: str, **values: object) -> AudioConfig:
    audio = production_config(tmp_path).audio
    assert (audio.sample_rate, audio.channels, audio.input_latency_s) == (48000, 1, 0.1)
    return audio.model_copy(update={"backend": backend, **values})


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wrong_name_names_the_key_and_lists_what_exists(
        backend: str, pulse_server: str, tmp_path: Path) -> None:
    pytest.importorskip(backend)
    with pytest.raises(AudioError) as error:
        open_microphone(pi_audio(tmp_path, backend, input_device="USB PnP Sound Device"))
    message = str(error.value)
    assert message.startswith("[audio] input_device = 'USB PnP Sound Device': no input device")
    assert "available: " in message and "'pulse'" in message
    with pytest.raises(AudioError, match=r"^\[audio\] output_device = 'I2S amp': .*'pulse'"):
        open_speaker(pi_audio(tmp_path, backend, output_device="I2S amp"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_pi_settings_capture_from_the_named_device(
        backend: str, pulse_server: str, tmp_path: Path) -> None:
    pytest.importorskip(backend)
    microphone = open_microphone(pi_audio(tmp_path, backend, input_device="pulse"))
    blocks: list[int] = []
    microphone.start(lambda pcm, _ns: blocks.append(len(pcm)))
    try:
        time.sleep(0.5)
    finally:
        microphone.stop()
    assert len(blocks) >= 10 and set(blocks) == {48000 // 50}  # 20 ms blocks at 48 kHz
