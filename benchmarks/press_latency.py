#!/usr/bin/env python3
"""Press latency: from the button's edge to recording, and to the notice reaching the speaker.

Run from the repository root:

    python benchmarks/press_latency.py [--presses 100] [--backend sounddevice]

The whole daemon runs on the simulated camera with gpiozero MockFactory pins and a
real audio backend playing into a private PulseAudio null sink (started here, as the
tests do). For each press the button pin is driven low at t0 (CLOCK_MONOTONIC);
the figures are

- to recording: t0 until the state machine is in RECORDING (the record_start record is
  sealed, fsync included, and the recorder takes packets);
- to the notice: t0 until the first sample of the notice is handed to the audio device,
  as the sealed notice_played record states it (corrected for the output latency the
  device reports).

The notice played is a 0.3 s tone in place of the 9 s sentence, so that 100 presses take
minutes, not a quarter of an hour: the path to its first sample is the same. Between
presses the recording is stopped with the hold event the button's hold timer sends.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import load_config
from agent.device.daemon import Daemon
from agent.device.state import ButtonHeld, Shutdown, State
from agent.evidence.chain import read_bodies
from tests.support.device import write_device_config
from tests.support.pulse import private_pulse


def tone_wav(path: Path, seconds: float = 0.3, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 880 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


def wait(condition, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.0005)
    return time.monotonic_ns()


def notices(store: Path) -> list[dict]:
    bodies = read_bodies(store / "chain.jsonl")
    return [b["payload"]["parts"][0] for b in bodies if b["type"] == "notice_played"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--backend", choices=["sounddevice", "pyaudio"], default="sounddevice")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bodycam-latency-"))
    voice = root / "voice"
    voice.mkdir()
    tone_wav(voice / "notice-zh.wav")
    config_path = write_device_config(root / "device.toml", root / "store", realtime="true",
                                      notice="true", audio_backend=args.backend,
                                      languages='["zh"]', segment_seconds=2.0)
    with config_path.open("a") as f:
        f.write(f'folder = "{voice}"\n')
    to_recording, to_notice = [], []
    with private_pulse(root / "pulse"):
        config, path = load_config(config_path)
        daemon = Daemon(config, path)
        thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        thread.start()
        daemon.ready.wait(30)
        pin = daemon.controls.factory.pin(config.gpio.button_pin)
        time.sleep(1.0)
        for press in range(args.presses):
            played = len(notices(daemon.store.root))
            t0 = time.monotonic_ns()
            pin.drive_low()
            recording = wait(lambda: daemon.machine.state is State.RECORDING)
            pin.drive_high()
            wait(lambda played=played: len(notices(daemon.store.root)) > played)
            notice = notices(daemon.store.root)[-1]
            to_recording.append((recording - t0) / 1e6)
            to_notice.append((notice["started_mono_ns"] - t0) / 1e6)
            daemon.post(ButtonHeld(-press - 1))
            wait(lambda: daemon.machine.state is State.STANDBY)
        daemon.post(Shutdown("benchmark done"))
        thread.join()

    print(f"{args.presses} presses, audio backend {args.backend}, PulseAudio null sink")
    for name, values in (("button edge -> recording", to_recording),
                         ("button edge -> first notice sample at the speaker", to_notice)):
        print(f"{name:52s} p50 {statistics.median(values):7.1f} ms   "
              f"p99 {percentile(values, 99):7.1f} ms   max {max(values):7.1f} ms")
    ok = percentile(to_notice, 99) < 100
    print(f"target p99 < 100 ms: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
