"""What each camera profile costs the CPU per frame: the software H.264 encoder a board
without an H.264 block runs (Pi 5), and the overlay every board runs.

Per profile of agent/config.py (720p30, 1080p30), over --frames frames of a moving
picture (a static one would encode as all-skip frames), median of five runs, the profiles
alternated run by run so a shared machine's load falls on both alike:
- libx264 as picamera2's LibavH264Encoder sets it up (preset ultrafast, tune zerolatency,
  the profile's bitrate, a keyframe every 30 frames, libx264 choosing its threads), fed
  planar YUV420 as picamera2 gives it: CPU time of this process (every thread) per frame;
- the overlay burned into the YUV420 frame (hal/camera/overlay.py), the time advancing one
  frame interval per frame: CPU time per frame.
CPU time, not wall time: what the encoder takes from the board, whatever else runs.
Usage: python benchmarks/profiles.py [--frames 150] [--json FILE]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np

from agent.config import PROFILES, VideoMode
from hal.camera.overlay import Overlay

GOP = 30


def software_encoder(mode: VideoMode) -> av.video.codeccontext.VideoCodecContext:
    """libx264 as picamera2's LibavH264Encoder opens it (0.3.24 to 0.3.38)."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = mode.width, mode.height, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, mode.fps), mode.fps
    codec.bit_rate, codec.gop_size, codec.thread_count = mode.bitrate, GOP, 0
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "deblock": "1"}
    codec.open()
    return codec


def moving_picture(mode: VideoMode) -> list[np.ndarray]:
    """One second of planar YUV420 frames, a gradient panning across."""
    width, height = mode.width, mode.height
    base = np.full((height * 3 // 2, width), 128, np.uint8)
    base[:height] = np.tile(np.linspace(16, 235, width, dtype=np.uint8), (height, 1))
    frames = []
    for shift in range(mode.fps):
        planes = base.copy()
        planes[:height] = np.roll(base[:height], shift * 8, axis=1)
        frames.append(planes)
    return frames


class Profile:
    """One profile's encoder, overlay and frames, kept across runs."""

    def __init__(self, mode: VideoMode, frames: int) -> None:
        self.mode = mode
        self.frames = frames
        self.picture = moving_picture(mode)
        self.encoder = software_encoder(mode)
        self.overlay = Overlay(mode.width, mode.height, ["time", "device", "officer"],
                               "BWC-0001", lambda: "OFC-4711", ZoneInfo("Asia/Shanghai"))
        start = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
        self.at = [start + timedelta(microseconds=i * 1_000_000 // mode.fps)
                   for i in range(frames)]
        self.pts = 0

    def encode(self, index: int) -> None:
        planes = self.picture[index % len(self.picture)]
        height = self.mode.height
        frame = av.VideoFrame(self.mode.width, height, "yuv420p")
        for plane, data in zip(frame.planes, (planes[:height], planes[height:height * 5 // 4],
                                              planes[height * 5 // 4:]), strict=True):
            plane.update(data.tobytes())
        frame.pts = self.pts
        self.pts += 1
        self.encoder.encode(frame)

    def burn(self, index: int) -> None:
        self.overlay.burn_yuv420(self.picture[index % len(self.picture)], self.mode.height,
                                 self.at[index])


def cpu_ms_per_frame(frames: int, work: Callable[[int], None]) -> float:
    started = time.process_time()
    for index in range(frames):
        work(index)
    return (time.process_time() - started) * 1000 / frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    profiles = {name: Profile(mode, args.frames) for name, mode in PROFILES.items()}
    runs: dict[str, dict[str, list[float]]] = {
        name: {"encode": [], "overlay": []} for name in profiles}
    for _ in range(5):
        for name, profile in profiles.items():
            runs[name]["encode"].append(cpu_ms_per_frame(args.frames, profile.encode))
            runs[name]["overlay"].append(cpu_ms_per_frame(args.frames, profile.burn))
    results = {name: {part: statistics.median(values) for part, values in parts.items()}
               for name, parts in runs.items()}
    print(f"{'profile':<9} {'size':<10} {'Mbit/s':>6} {'x264 CPU/frame':>15} "
          f"{'x264 cores at fps':>18} {'overlay CPU/frame':>18}")
    for name, figures in results.items():
        mode = PROFILES[name]
        print(f"{name:<9} {mode.width}x{mode.height:<5} {mode.bitrate / 1e6:>6.0f} "
              f"{figures['encode']:>12.2f} ms {figures['encode'] * mode.fps / 1000:>18.2f} "
              f"{figures['overlay']:>15.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
