"""The microphone and the speaker behind two narrow interfaces, timed on CLOCK_MONOTONIC.

The recorder and the chain need to know when a sound was heard, not when Python
saw it, so every timestamp here is the moment at the converter: the capture time
of a block's first sample, the moment the first sample of a prompt left the
speaker. PortAudio's ALSA host API reads those moments from ALSA's status
timestamp, whose clock depends on the device: CLOCK_MONOTONIC for ``hw:`` devices
and PipeWire's plugin, CLOCK_REALTIME (which NTP may step) for PulseAudio's
plugin. A stream time that reads like CLOCK_MONOTONIC is taken as it is, free of
the callback's own scheduling delay; any other is mapped onto CLOCK_MONOTONIC
through the callback's ``currentTime``, read on the same clock at the same
moment. Where a host API gives no timing (all zeros, which PortAudio allows), the
reported stream latency is used instead.

Devices are chosen by a substring of their name, because indices move when a
USB microphone is plugged in a different order. Hardware libraries are imported
only inside the backend that uses them.
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from agent.config import AudioConfig

SIM_TONE_HZ = 440.0
SIM_TONE_AMPLITUDE = 0.1  # a sine peaking at 0.1 is -20 dBFS
BLOCKS_PER_SECOND = 50    # 20 ms capture blocks
PLAYBACK_GRACE_S = 5.0    # beyond the audio's duration before playback is declared stuck
# A stream time this close to CLOCK_MONOTONIC is on it: a callback runs well within a second
# of its status timestamp, and CLOCK_REALTIME is decades away from the time since boot.
SAME_CLOCK_S = 1.0
# A prompt may start this late but must never crackle; its start is measured, not assumed.
# (PortAudio's "high" default underruns continuously on ALSA's pulse plugin.)
OUTPUT_LATENCY_S = 0.1


class AudioError(Exception):
    """An audio device that cannot be found, opened or read."""


@dataclass(frozen=True)
class Playback:
    """When a sound was heard: CLOCK_MONOTONIC ns of its first sample and of its end."""

    started_ns: int
    ended_ns: int


class Speaker(Protocol):
    def play(self, pcm: np.ndarray, sample_rate: int) -> Playback:
        """Play float32 (frames, channels) or (frames,) audio; return once it has been heard."""
        ...


class Microphone(Protocol):
    """Captures continuously; a lost block shows as a jump in the timestamps."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def overruns(self) -> int:
        """Input overflows reported since start: samples were lost just before the block
        that reported one, and the count grows before that block is handed on."""
        ...

    def start(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        """Call on_block(float32 frames x channels, capture ns of its first sample) per block."""
        ...

    def stop(self) -> None: ...


def open_speaker(config: AudioConfig) -> Speaker:
    """The configured speaker; a device name that matches nothing fails here, at start."""
    if not config.speaker:
        raise AudioError("[audio] speaker = false: this device has no speaker to be heard")
    if config.backend == "sounddevice":
        return SoundDeviceSpeaker(config)
    if config.backend == "pyaudio":
        return PyAudioSpeaker(config)
    return SimulatedSpeaker()


def open_microphone(config: AudioConfig) -> Microphone:
    """The configured microphone, checked against the device before anything records."""
    if config.backend == "sounddevice":
        return SoundDeviceMicrophone(config)
    if config.backend == "pyaudio":
        return PyAudioMicrophone(config)
    return SimulatedMicrophone(config)


def load_wav(path: Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file as float32 (frames, channels) in [-1, 1] and its sample rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{path}: not a PCM WAV file ({exc})") from exc
    except OSError as exc:
        raise AudioError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if width == 1:
        pcm = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        pcm = ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8) / np.float32(1 << 23)
    elif width in (2, 4):
        pcm = np.frombuffer(raw, f"<i{width}") / np.float32(1 << (8 * width - 1))
    else:
        raise AudioError(f"{path}: unsupported sample width of {width} bytes")
    return pcm.astype(np.float32).reshape(-1, channels), rate


def rms_dbfs(pcm: np.ndarray) -> float:
    """The level in dBFS, a full-scale sine being 0 dBFS (AES17); -inf for digital silence."""
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if pcm.size else 0.0
    return float(20 * np.log10(rms * np.sqrt(2))) if rms > 0 else float("-inf")


def conform(pcm: np.ndarray, rate: int, to_rate: int, to_channels: int) -> np.ndarray:
    """Audio made playable by a device: linear resampling, mono spread or stereo mixed down."""
    pcm = np.asarray(pcm, np.float32)
    if pcm.ndim == 1:
        pcm = pcm[:, None]
    if rate != to_rate and len(pcm):
        frames = round(len(pcm) * to_rate / rate)
        at = np.arange(frames) * (rate / to_rate)
        pcm = np.stack([np.interp(at, np.arange(len(pcm)), ch) for ch in pcm.T], axis=1)
    if pcm.shape[1] != to_channels:
        pcm = np.repeat(pcm.mean(axis=1, keepdims=True), to_channels, axis=1)
    return np.ascontiguousarray(pcm, np.float32)


# --- device choice -------------------------------------------------------------------------

_Kind = Literal["input", "output"]


@dataclass(frozen=True)
class _Device:
    index: int
    name: str
    inputs: int
    outputs: int
    default_rate: int

    def channels(self, kind: _Kind) -> int:
        return self.inputs if kind == "input" else self.outputs


def _choose(wanted: str, devices: list[_Device], default: int, kind: _Kind) -> _Device:
    """The device whose name contains `wanted` (an exact name wins); "" is the default."""
    usable = [d for d in devices if d.channels(kind) > 0]
    names = ", ".join(repr(d.name) for d in usable) or "none"
    key = f"[audio] {kind}_device = {wanted!r}"  # the installer's handle on the choice
    if not wanted:
        found = [d for d in usable if d.index == default]
        if not found:
            raise AudioError(f"{key}: no default {kind} device; available: {names}")
        return found[0]
    found = ([d for d in usable if d.name == wanted]
             or [d for d in usable if wanted.lower() in d.name.lower()])
    if not found:
        raise AudioError(f"{key}: no {kind} device named like {wanted!r}; available: {names}")
    if len(found) > 1:
        raise AudioError(f"{key} is ambiguous: it matches "
                         f"{', '.join(repr(d.name) for d in found)}")
    return found[0]


def _check_channels(device: _Device, kind: _Kind, channels: int) -> None:
    if device.channels(kind) < channels:
        raise AudioError(f"{kind} device {device.name!r} has {device.channels(kind)} "
                         f"channels, {channels} wanted")


# --- timing ----------------------------------------------------------------------------------

def _monotonic_ns(now_ns: int, current: float, stream_time: float) -> int:
    """A PortAudio stream time on CLOCK_MONOTONIC: as it is when the stream clock is
    CLOCK_MONOTONIC, else mapped through currentTime (both read from one ALSA status)."""
    if abs(current - now_ns / 1e9) < SAME_CLOCK_S:
        return round(stream_time * 1e9)
    return now_ns + round((stream_time - current) * 1e9)


def _adc_ns(now_ns: int, current: float, adc: float, frames: int, rate: int,
            latency: float) -> int:
    """Capture time of a block's first sample: PortAudio's inputBufferAdcTime on the monotonic
    clock, else (no timing from the host API) now minus the block and the input latency."""
    if current and adc:
        return _monotonic_ns(now_ns, current, adc)
    return now_ns - round((frames / rate + latency) * 1e9)


def _dac_ns(now_ns: int, current: float, dac: float, latency: float) -> int:
    """When a buffer will be heard: outputBufferDacTime on the monotonic clock, else now
    plus the output latency."""
    if current and dac:
        return _monotonic_ns(now_ns, current, dac)
    return now_ns + round(latency * 1e9)


class _Feed:
    """A sound handed to a callback stream block by block, noting when it will be heard."""

    def __init__(self, pcm: np.ndarray, rate: int) -> None:
        self._pcm = pcm
        self._rate = rate
        self._pos = 0
        self.started_ns: int | None = None
        self.ended_ns = 0

    def fill(self, out: np.ndarray, heard_ns: int) -> bool:
        """Fill `out` (zero-padded at the end); True once the last sample has been handed."""
        if self.started_ns is None:
            self.started_ns = self.ended_ns = heard_ns
        block = self._pcm[self._pos:self._pos + len(out)]
        out[:len(block)] = block
        out[len(block):] = 0
        self._pos += len(block)
        if len(block):
            self.ended_ns = heard_ns + len(block) * 1_000_000_000 // self._rate
        return self._pos >= len(self._pcm)

    def wait(self, device: str, finished: Callable[[float], bool]) -> Playback:
        """Block until `finished(timeout)` says the stream is done and the last sample has
        been heard."""
        timeout = len(self._pcm) / self._rate + PLAYBACK_GRACE_S
        if not finished(timeout) or self.started_ns is None:
            raise AudioError(f"playback on {device!r} did not finish within {timeout:.1f} s")
        _sleep_until(self.ended_ns)
        return Playback(self.started_ns, self.ended_ns)


def _sleep_until(monotonic_ns: int) -> None:
    delay = (monotonic_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


# --- sounddevice -----------------------------------------------------------------------------

def _sd_device(sd: Any, wanted: str, kind: _Kind) -> _Device:
    devices = [_Device(i, d["name"], d["max_input_channels"], d["max_output_channels"],
                       round(d["default_samplerate"])) for i, d in enumerate(sd.query_devices())]
    try:
        default = sd.query_devices(kind=kind)["index"]
    except sd.PortAudioError:  # sounddevice's way of saying there is none
        default = -1
    return _choose(wanted, devices, default, kind)


class SoundDeviceSpeaker:
    """Playback through sounddevice 0.5 (PortAudio V19 callback OutputStream), at the
    device's own default rate so no hardware is asked for a rate it lacks."""

    def __init__(self, config: AudioConfig) -> None:
        import sounddevice as sd

        self._sd = sd
        self._device = _sd_device(sd, config.output_device, "output")

    def play(self, pcm: np.ndarray, sample_rate: int) -> Playback:
        sd, dev = self._sd, self._device
        channels = min(2, dev.outputs)
        feed = _Feed(conform(pcm, sample_rate, dev.default_rate, channels), dev.default_rate)
        finished = threading.Event()

        def callback(out: np.ndarray, frames: int, t: Any, _status: Any) -> None:
            now = time.monotonic_ns()
            if feed.fill(out, _dac_ns(now, t.currentTime, t.outputBufferDacTime,
                                      stream.latency)):
                raise sd.CallbackStop

        try:
            stream = sd.OutputStream(device=dev.index, samplerate=dev.default_rate,
                                     channels=channels, dtype="float32",
                                     latency=OUTPUT_LATENCY_S, callback=callback,
                                     finished_callback=finished.set)
        except sd.PortAudioError as exc:
            raise AudioError(f"cannot open output device {dev.name!r}: {exc}") from exc
        with stream:
            stream.start()
            return feed.wait(dev.name, finished.wait)


class SoundDeviceMicrophone:
    """Capture through sounddevice 0.5 (PortAudio V19 callback InputStream), 20 ms blocks."""

    def __init__(self, config: AudioConfig) -> None:
        import sounddevice as sd

        self._sd = sd
        self.sample_rate, self.channels = config.sample_rate, config.channels
        self._latency = config.input_latency_s
        self._device = _sd_device(sd, config.input_device, "input")
        _check_channels(self._device, "input", self.channels)
        try:
            sd.check_input_settings(self._device.index, self.channels, "float32",
                                    samplerate=self.sample_rate)
        except sd.PortAudioError as exc:
            raise AudioError(f"input device {self._device.name!r} refuses "
                             f"{self.sample_rate} Hz x {self.channels}: {exc}") from exc
        self._stream: Any = None
        self.overruns = 0

    def start(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        rate = self.sample_rate

        def callback(pcm: np.ndarray, frames: int, t: Any, status: Any) -> None:
            now = time.monotonic_ns()
            if status.input_overflow:
                self.overruns += 1
            on_block(pcm.copy(), _adc_ns(now, t.currentTime, t.inputBufferAdcTime, frames,
                                         rate, self._stream.latency))

        try:
            self._stream = self._sd.InputStream(
                device=self._device.index, samplerate=rate, channels=self.channels,
                dtype="float32", blocksize=rate // BLOCKS_PER_SECOND, latency=self._latency,
                callback=callback)
        except self._sd.PortAudioError as exc:
            raise AudioError(f"cannot open input device {self._device.name!r}: {exc}") from exc
        self._stream.start()

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


# --- pyaudio ---------------------------------------------------------------------------------

def _pa_device(pa: Any, wanted: str, kind: _Kind) -> _Device:
    devices = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        devices.append(_Device(i, d["name"], d["maxInputChannels"], d["maxOutputChannels"],
                               round(d["defaultSampleRate"])))
    try:
        info = pa.get_default_input_device_info() if kind == "input" \
            else pa.get_default_output_device_info()
        default = info["index"]
    except OSError:  # PyAudio's way of saying there is none
        default = -1
    return _choose(wanted, devices, default, kind)


class PyAudioSpeaker:
    """Playback through PyAudio 0.2.14 (PortAudio V19, callback mode), at the device's own
    default rate. The PyAudio instance lives as long as the speaker."""

    def __init__(self, config: AudioConfig) -> None:
        import pyaudio

        self._pyaudio = pyaudio
        self._pa = pyaudio.PyAudio()
        self._device = _pa_device(self._pa, config.output_device, "output")

    def play(self, pcm: np.ndarray, sample_rate: int) -> Playback:
        pyaudio, dev = self._pyaudio, self._device
        channels = min(2, dev.outputs)
        feed = _Feed(conform(pcm, sample_rate, dev.default_rate, channels), dev.default_rate)

        def callback(_in: None, frames: int, t: dict[str, float], _status: int
                     ) -> tuple[bytes, int]:
            now = time.monotonic_ns()
            out = np.empty((frames, channels), np.float32)
            done = feed.fill(out, _dac_ns(now, t["current_time"], t["output_buffer_dac_time"],
                                          stream.get_output_latency()))
            return out.tobytes(), pyaudio.paComplete if done else pyaudio.paContinue

        try:
            # PyAudio takes a buffer size, not a latency; PortAudio keeps two buffers queued.
            stream = self._pa.open(rate=dev.default_rate, channels=channels,
                                   format=pyaudio.paFloat32, output=True,
                                   output_device_index=dev.index,
                                   frames_per_buffer=round(dev.default_rate * OUTPUT_LATENCY_S / 2),
                                   stream_callback=callback, start=False)
        except OSError as exc:
            raise AudioError(f"cannot open output device {dev.name!r}: {exc}") from exc
        try:
            stream.start_stream()
            return feed.wait(dev.name, lambda timeout: _until_inactive(stream, timeout))
        finally:
            stream.close()


def _until_inactive(stream: Any, timeout: float) -> bool:
    """PyAudio has no finished callback: poll until PortAudio reports the stream done."""
    deadline = time.monotonic() + timeout
    while stream.is_active():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class PyAudioMicrophone:
    """Capture through PyAudio 0.2.14 (PortAudio V19, callback mode), 20 ms blocks."""

    def __init__(self, config: AudioConfig) -> None:
        import pyaudio

        self._pyaudio = pyaudio
        self._pa = pyaudio.PyAudio()
        self.sample_rate, self.channels = config.sample_rate, config.channels
        self._device = _pa_device(self._pa, config.input_device, "input")
        _check_channels(self._device, "input", self.channels)
        try:
            self._pa.is_format_supported(self.sample_rate, input_device=self._device.index,
                                         input_channels=self.channels,
                                         input_format=pyaudio.paFloat32)
        except ValueError as exc:
            raise AudioError(f"input device {self._device.name!r} refuses "
                             f"{self.sample_rate} Hz x {self.channels}: {exc}") from exc
        self._stream: Any = None
        self.overruns = 0

    def start(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        pyaudio, rate, channels = self._pyaudio, self.sample_rate, self.channels

        def callback(data: bytes, frames: int, t: dict[str, float], status: int
                     ) -> tuple[None, int]:
            now = time.monotonic_ns()
            if status & pyaudio.paInputOverflow:
                self.overruns += 1
            pcm = np.frombuffer(data, np.float32).reshape(-1, channels).copy()
            on_block(pcm, _adc_ns(now, t["current_time"], t["input_buffer_adc_time"], frames,
                                  rate, self._stream.get_input_latency()))
            return None, pyaudio.paContinue

        try:
            self._stream = self._pa.open(
                rate=rate, channels=channels, format=pyaudio.paFloat32, input=True,
                input_device_index=self._device.index,
                frames_per_buffer=rate // BLOCKS_PER_SECOND, stream_callback=callback,
                start=False)
        except OSError as exc:
            raise AudioError(f"cannot open input device {self._device.name!r}: {exc}") from exc
        self._stream.start_stream()

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop_stream()
            self._stream.close()
            self._stream = None


# --- simulated -------------------------------------------------------------------------------

class SimulatedSpeaker:
    """Plays nowhere, but takes the sound's real duration, as the voice thread expects."""

    def play(self, pcm: np.ndarray, sample_rate: int) -> Playback:
        started = time.monotonic_ns()
        ended = started + len(pcm) * 1_000_000_000 // sample_rate
        _sleep_until(ended)
        return Playback(started, ended)


class SimulatedMicrophone:
    """A 440 Hz tone at -20 dBFS, produced in real time in 20 ms blocks on its own thread."""

    overruns = 0  # it never loses a sample

    def __init__(self, config: AudioConfig) -> None:
        self.sample_rate, self.channels = config.sample_rate, config.channels
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(on_block,),
                                        name="sim-microphone", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
            self._thread = None

    def _run(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        rate, block = self.sample_rate, self.sample_rate // BLOCKS_PER_SECOND
        origin = time.monotonic_ns()
        sample = 0
        while True:
            # A block is delivered once its last sample has been "captured", as a device does.
            due = origin + (sample + block) * 1_000_000_000 // rate
            if self._stop.wait(max(0, due - time.monotonic_ns()) / 1e9):
                return
            t = np.arange(sample, sample + block) / rate
            tone = (SIM_TONE_AMPLITUDE * np.sin(2 * np.pi * SIM_TONE_HZ * t)).astype(np.float32)
            on_block(np.repeat(tone[:, None], self.channels, axis=1),
                     origin + sample * 1_000_000_000 // rate)
            sample += block


class AbsentMicrophone:
    """Captures nothing: the recording keeps its audio track, with no packet in it (never
    invented silence)."""

    overruns = 0

    def __init__(self, sample_rate: int, channels: int, reason: str) -> None:
        self.sample_rate, self.channels, self.reason = sample_rate, channels, reason

    def start(self, on_block: Callable[[np.ndarray, int], None]) -> None:
        pass

    def stop(self) -> None:
        pass


class AbsentSpeaker:
    """Every playback fails with the reason: nothing is sealed as heard that was not."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def play(self, pcm: np.ndarray, sample_rate: int) -> Playback:
        raise AudioError(f"no speaker: {self.reason}")
