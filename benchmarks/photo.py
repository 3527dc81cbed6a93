#!/usr/bin/env python3
"""What a photo costs: on the camera's thread, on the photo thread, and from press to record.

Run from the repository root:

    python benchmarks/photo.py [--photos 20] [--repeat 20]

Per size (1280x720, 1920x1080), median of --repeat runs of each part:
- the camera thread's share: the copy of one frame that a still takes (the simulated
  camera copies its RGB frame; picamera2's capture job copies the YUV420 buffer, stride
  padded, as `CompletedRequest.make_array` does);
- the photo thread's share: YUV420 to RGB (hal/camera/picamera.py, the picamera2 path) and
  the JPEG encoding (agent/device/photo.py), with the JPEG's size.
Then the whole daemon on the simulated camera in real time at 1280x720 (gpiozero MockFactory
pins): the PHOTO pin is driven low --photos times, one at a time, and each time is measured
from the edge to the `photo` record on disk (still, JPEG, fsync of the file and the record).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from agent.config import load_config
from agent.device.daemon import Daemon
from agent.device.photo import JPEG_QUALITY
from agent.device.state import Shutdown
from agent.evidence.chain import read_bodies
from hal.camera.picamera import _rgb
from tests.support.device import write_device_config

SIZES = [(1280, 720), (1920, 1080)]


def median_ms(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def picture(width: int, height: int) -> np.ndarray:
    """A busy picture (JPEG size depends on detail): a ramp with noise."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    return np.clip(ramp + rng.normal(0, 24, (height, width, 3)), 0, 255).astype(np.uint8)


def parts(repeat: int) -> None:
    print(f"size | camera thread: RGB copy / YUV420 copy | photo thread: YUV->RGB / "
          f"JPEG q{JPEG_QUALITY} | JPEG bytes")
    for width, height in SIZES:
        rgb = picture(width, height)
        stride = -(-width // 64) * 64
        yuv = np.random.default_rng(2).integers(16, 235, (height * 3 // 2, stride),
                                                dtype=np.uint8)
        jpeg = io.BytesIO()

        def encode(rgb: np.ndarray = rgb) -> None:
            Image.fromarray(rgb).save(io.BytesIO(), "JPEG", quality=JPEG_QUALITY)

        def convert(yuv: np.ndarray = yuv, width: int = width, height: int = height,
                    stride: int = stride) -> None:
            _rgb(yuv, width, height, stride, "Rec709")

        Image.fromarray(rgb).save(jpeg, "JPEG", quality=JPEG_QUALITY)
        print(f"{width}x{height} | {median_ms(rgb.copy, repeat):.2f} ms / "
              f"{median_ms(yuv.copy, repeat):.2f} ms | {median_ms(convert, repeat):.1f} ms / "
              f"{median_ms(encode, repeat):.1f} ms | {len(jpeg.getvalue())}")


def press_to_record(photos: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config_path = write_device_config(root / "device.toml", root / "store", width=1280,
                                          height=720, bitrate=2_000_000, gop=30,
                                          realtime="true")
        config, path = load_config(config_path)
        daemon = Daemon(config, path)
        thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        thread.start()
        daemon.ready.wait(30)
        chain = root / "store" / "chain.jsonl"
        pin = daemon.controls.factory.pin(config.gpio.photo_pin)
        latencies = []
        try:
            for n in range(1, photos + 1):
                time.sleep(0.2)
                began = time.monotonic()
                pin.drive_low()
                while sum(1 for r in read_bodies(chain) if r["type"] == "photo") < n:
                    time.sleep(0.002)
                latencies.append(time.monotonic() - began)
                pin.drive_high()
        finally:
            daemon.post(Shutdown("benchmark done"))
            thread.join(60)
    ms = sorted(x * 1000 for x in latencies)
    print(f"edge -> photo record, 1280x720 real time, {photos} photos: p50 "
          f"{statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms (polled every 2 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    parts(args.repeat)
    press_to_record(args.photos)


if __name__ == "__main__":
    main()
