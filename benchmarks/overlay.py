"""What the time and identity overlay costs per frame, at 1280x720 and 1920x1080.

In one run, per size, over --frames frames whose time advances one frame interval
each (so the millisecond text changes every frame, as in recording), CPU time per frame:
- the overlay alone on a YUV420 buffer (the picamera2 path, hal/camera/overlay.burn_yuv420),
  with a new text each frame and with the text unchanged (the copy alone), against the
  baseline of rendering the whole text with Pillow whenever it changes (what the overlay
  did before its glyph cache);
- the overlay alone on a packed RGB frame (the simulated camera's path);
- a libx264 ultrafast encode of the frame without the overlay, and with it, as a
  software-encoding board (Pi 5) does it: frames per second both ways, the runs
  alternated so that a shared machine's load falls on both alike.
Usage: python benchmarks/overlay.py [--frames 300] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hal.camera.overlay import Overlay

SIZES = [(1280, 720), (1920, 1080)]
FPS = 30
FIELDS = ["time", "device", "officer"]
ZONE = ZoneInfo("Asia/Shanghai")


def per_frame_ms(frames: int, work: Callable[[int], None]) -> float:
    """Median of five timings of `frames` calls, in CPU ms per call: CPU time, not wall
    time, so that on a shared machine the time other processes hold the core is not
    counted as the overlay's."""
    runs = []
    for _ in range(5):
        started = time.process_time()
        for index in range(frames):
            work(index)
        runs.append((time.process_time() - started) * 1000 / frames)
    return statistics.median(runs)


def encoder(width: int, height: int) -> av.video.codeccontext.VideoCodecContext:
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, FPS), FPS
    codec.options = {"preset": "ultrafast", "tune": "zerolatency"}
    codec.open()
    return codec


def measure(width: int, height: int, frames: int) -> dict[str, float]:
    overlay = Overlay(width, height, FIELDS, "BWC-0001", lambda: "OFC-4711", ZONE)
    start = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    at = [start + timedelta(microseconds=i * 1_000_000 // FPS) for i in range(frames)]
    yuv = np.full((height * 3 // 2, width), 128, np.uint8)
    yuv[:height] = np.tile(np.linspace(16, 235, width, dtype=np.uint8), (height, 1))
    rgb = np.zeros((height, width, 3), np.uint8)
    baseline = WholeTextBaseline(overlay, height)
    figures = {
        "baseline_yuv420_ms": per_frame_ms(frames, lambda i: baseline.burn_yuv420(
            yuv, height, at[i])),
        "overlay_yuv420_ms": per_frame_ms(frames, lambda i: overlay.burn_yuv420(
            yuv, height, at[i])),
        "overlay_yuv420_same_text_ms": per_frame_ms(frames, lambda i: overlay.burn_yuv420(
            yuv, height, start)),
        "overlay_rgb_ms": per_frame_ms(frames, lambda i: overlay.burn_packed(rgb, at[i])),
    }
    # Encoding with and without the overlay, alternated run by run so that the load of a
    # shared machine falls on both alike.
    encoders = {burn: encoder(width, height) for burn in (False, True)}

    # A moving picture, as a camera's is: a static one would encode as all-skip P frames
    # and make any change (the overlay's text) look expensive.
    moving = []
    for shift in range(FPS):
        planes = yuv.copy()
        planes[:height] = np.roll(yuv[:height], shift * 8, axis=1)
        moving.append(planes)

    def encode(i: int, burn: bool) -> None:
        planes = moving[i % FPS].copy()
        if burn:
            overlay.burn_yuv420(planes, height, at[i])
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, data in zip(frame.planes, (planes[:height], planes[height:height * 5 // 4],
                                              planes[height * 5 // 4:]), strict=True):
            plane.update(data.tobytes())
        frame.pts = i
        encoders[burn].encode(frame)

    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(5):
        for burn in (False, True):
            started = time.perf_counter()
            for index in range(frames):
                encode(index, burn)
            runs[burn].append(frames / (time.perf_counter() - started))
    figures["encode_fps"] = statistics.median(runs[False])
    figures["encode_with_overlay_fps"] = statistics.median(runs[True])
    return figures


class WholeTextBaseline:
    """The baseline: the whole text rendered with Pillow on every change, then converted
    to luma and copied in (the overlay before its glyph cache)."""

    def __init__(self, overlay: Overlay, height: int) -> None:
        self._overlay = overlay
        self._font = ImageFont.load_default(size=max(10, height // 24))

    def burn_yuv420(self, planes: np.ndarray, height: int, wall: datetime) -> None:
        bar, width = self._overlay.bar_height, self._overlay.width
        image = Image.new("L", (width, bar), 0)
        ImageDraw.Draw(image).text((4, 2), self._overlay.text(wall), fill=255, font=self._font)
        planes[:bar, :width] = 16 + (np.asarray(image).astype(np.uint16) * 219 // 255).astype(
            np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {f"{w}x{h}": measure(w, h, args.frames) for w, h in SIZES}
    print(f"{'size':<10} {'baseline':>11} {'overlay YUV420':>15} {'ratio':>6} "
          f"{'same text':>10} {'overlay RGB':>12} {'x264 fps':>9} {'x264+overlay':>13}")
    for size, f in results.items():
        print(f"{size:<10} {f['baseline_yuv420_ms']:>8.3f} ms {f['overlay_yuv420_ms']:>12.3f} ms "
              f"{f['overlay_yuv420_ms'] / f['baseline_yuv420_ms']:>6.2f} "
              f"{f['overlay_yuv420_same_text_ms']:>7.3f} ms {f['overlay_rgb_ms']:>9.3f} ms "
              f"{f['encode_fps']:>9.0f} {f['encode_with_overlay_fps']:>13.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
