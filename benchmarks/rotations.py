#!/usr/bin/env python3
"""Rotation benchmark: what does cutting the stream into sealed segments cost?

Run from the repository root:

    python benchmarks/rotations.py [--rotations 300] [--segment-seconds 2]

1. Pre-encodes 300 frames (10 s) of 1280x720 30 fps H.264, keyframe every 30
   frames, plus AAC audio, with the project's own simulated camera (not timed).
2. Replays those packets in a loop, timestamps shifted by the loop length each
   time, as fast as the recorder takes them, into a real Recorder with a real
   Store and a real signed Chain, calling ``recorder.outputframe`` exactly as the
   camera does, until N rotations (N + 1 segments) worth of media have been fed.
3. Measures
   (a) frames lost or doubled at boundaries: ffprobe packet counts over all
       sealed segments against the packets fed, and the verifier's pts
       continuity across every boundary;
   (b) the longest stall of the packet path at a rotation: the duration of every
       ``outputframe`` call (overall, at rotation keyframes, and while the
       recorder was opening, closing or sealing a segment), and the writer
       thread's own time to cut a segment (``stats.longest_rotation_s``);
   (c) the agent's CPU seconds per recorded second (``time.process_time``
       over replay + stop);
   (d) the baseline: the same packets muxed (untimed) into one MPEG-TS, then
       ``ffmpeg -c copy -f segment`` plus ``sha256sum`` of the pieces, CPU from
       ``getrusage(RUSAGE_CHILDREN)``;
   (e) the ratio agent / baseline (target <= 1.5) and the stall against one
       frame interval.

Agent and baseline runs alternate `--repeats` times (default 3) and the CPU figures
are medians: on a shared machine one run can be 30 % off either way.

Exits 0 after printing the figures (it measures, it does not judge), except
exit 1 when frames were lost or doubled or the store does not verify.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.config import Config, RecorderConfig, load_config  # noqa: E402
from agent.device.recording.recorder import Recorder  # noqa: E402
from agent.evidence.chain import Chain  # noqa: E402
from agent.evidence.keys import load_or_create_device_key  # noqa: E402
from agent.evidence.store import Store  # noqa: E402
from agent.evidence.verify import verify_store  # noqa: E402
from hal.camera.base import StreamLayout  # noqa: E402
from hal.camera.sim import SimulatedCamera  # noqa: E402
from hal.clock import SimulatedClock  # noqa: E402

WIDTH, HEIGHT, FPS, GOP = 1280, 720, 30, 30
CAPTURE_FRAMES = 300
TARGET_RATIO = 1.5
_MICROSECONDS = Fraction(1, 1_000_000)


# --- 1. pre-encoding (not timed) ----------------------------------------------------------


class Captured(NamedTuple):
    """One packet as the camera handed it over, its payload as bytes (audio goes back in
    as a PyAV packet on replay, as the camera passes it)."""

    data: bytes
    timestamp: int
    keyframe: bool
    audio: bool


class _CaptureOutput:
    """An Output that keeps every packet until it has `frames` video frames and audio to match."""

    def __init__(self, frames: int, loop_us: int) -> None:
        self.packets: list[Captured] = []
        self.done = threading.Event()
        self._frames = frames
        self._loop_us = loop_us
        self._video = 0
        self._origin: int | None = None
        self._audio_covered = False

    def outputframe(self, frame: bytes | None, keyframe: bool = True,
                    timestamp: int | None = None, packet: Any = None,
                    audio: bool = False) -> None:
        if self.done.is_set():
            return
        if audio:
            self.packets.append(Captured(bytes(packet), timestamp, keyframe, True))
            if self._origin is not None and timestamp >= self._origin + self._loop_us:
                self._audio_covered = True
        else:
            if self._origin is None:
                self._origin = timestamp
            self.packets.append(Captured(bytes(frame), timestamp, keyframe, False))
            self._video += 1
        if self._video >= self._frames and self._audio_covered:
            self.done.set()


@dataclass
class Loop:
    """One loop of the replayed stream: packets in the camera's order, on the camera's clock."""

    layout: StreamLayout
    packets: list[Captured]
    audio_packets: dict[int, av.Packet]  # index in `packets` -> PyAV packet, as the camera passes
    origin_us: int
    length_us: int
    encode_s: float


def capture(workdir: Path, frames: int) -> Loop:
    """Encode `frames` video frames (and the audio of that time) with the simulated camera."""
    if (frames * 1_000_000) % FPS or frames % GOP:
        raise SystemExit(f"{frames} frames must be whole GOPs and whole microseconds long")
    loop_us = frames * 1_000_000 // FPS
    base, _ = load_config(None, store=workdir / "capture-store")
    config: Config = base.model_copy(update={
        "camera": base.camera.model_copy(update={
            "backend": "sim", "width": WIDTH, "height": HEIGHT, "fps": FPS,
            "keyframe_interval": GOP, "realtime": False}),
        "audio": base.audio.model_copy(update={"enabled": True}),
    })
    camera = SimulatedCamera(config)
    output = _CaptureOutput(frames, loop_us)
    started = time.perf_counter()
    camera.start(output)
    if not output.done.wait(600):
        camera.stop()
        raise SystemExit("the simulated camera did not deliver the frames within 600 s")
    camera.stop()
    encode_s = time.perf_counter() - started

    video = [p for p in output.packets if not p.audio][:frames]
    origin = video[0].timestamp
    if not video[0].keyframe:
        raise SystemExit("the first captured frame is not a keyframe")
    # Audio of [origin, origin + loop): the encoder's priming packet before the first frame
    # is left out, so that audio runs on across the loop join instead of overlapping.
    keep_video = {id(p) for p in video}
    packets = [p for p in output.packets
               if id(p) in keep_video
               or (p.audio and origin <= p.timestamp < origin + loop_us)]
    audio_packets = {i: av.Packet(p.data) for i, p in enumerate(packets) if p.audio}
    return Loop(camera.layout, packets, audio_packets, origin, loop_us, encode_s)


# --- 2. replay into the recorder (timed) -------------------------------------------------


class Fed(NamedTuple):
    index: int          # into Loop.packets
    timestamp: int
    rotation: bool      # a video keyframe at which the recorder must start a new segment


def replay_schedule(loop: Loop, rotations: int, segment_us: int) -> list[Fed]:
    """The packets to feed: loop after loop until just before rotation N + 1.

    Rotation points follow the recorder's rule (first video keyframe at or past the
    target length from the segment's first frame), so the last segment is as long as
    the others and exactly N rotations happen while feeding.
    """
    schedule: list[Fed] = []
    segment_first: int | None = None
    done = 0
    for n in itertools.count():
        shift = n * loop.length_us
        for index, packet in enumerate(loop.packets):
            ts = packet.timestamp + shift
            rotation = False
            if not packet.audio:
                if segment_first is None:
                    segment_first = ts
                elif packet.keyframe and ts - segment_first >= segment_us:
                    if done == rotations:
                        return schedule
                    rotation, segment_first, done = True, ts, done + 1
            schedule.append(Fed(index, ts, rotation))
    raise AssertionError("unreachable")


@dataclass
class Timeline:
    """When the recorder's threads were busy cutting: opening, closing, sealing segments."""

    windows: list[tuple[float, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, start: float, end: float, what: str) -> None:
        with self.lock:
            self.windows.append((start, end, what))


def instrument(recorder: Recorder, timeline: Timeline) -> bool:
    """Note when segments are opened, closed and sealed, by wrapping the recorder's own steps.

    Wrapping only records times; the work done is the recorder's. Returns False (and
    leaves the recorder alone) if its internals have changed shape.
    """
    open_segment = getattr(recorder, "_open_segment", None)
    seal = getattr(recorder, "_seal", None)
    if open_segment is None or seal is None:
        return False

    def timed_open(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        segment = open_segment(*args, **kwargs)
        timeline.add(started, time.perf_counter(), "open")
        close = segment.close

        def timed_close() -> Any:
            began = time.perf_counter()
            summary = close()
            timeline.add(began, time.perf_counter(), "close")
            return summary

        segment.close = timed_close
        return segment

    def timed_seal(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = seal(*args, **kwargs)
        timeline.add(started, time.perf_counter(), "seal")
        return result

    recorder._open_segment = timed_open
    recorder._seal = timed_seal
    return True


@dataclass
class AgentRun:
    store: Path
    fed_video: int
    fed_audio: int
    media_s: float
    rotations: int
    call_start: list[float]
    call_s: list[float]
    rotation_call_s: list[float]
    cpu_s: float
    feeder_cpu_s: float
    wall_s: float
    feed_wall_s: float
    stop_wall_s: float
    longest_rotation_s: float
    max_queue_depth: int
    segments_sealed: int
    timeline: Timeline
    instrumented: bool
    lead_limited: bool
    stop_record: dict[str, Any] | None


def run_agent(loop: Loop, schedule: list[Fed], workdir: Path, segment_seconds: float,
              max_lead_s: float, recipients: list[X25519PublicKey] | None = None) -> AgentRun:
    store = Store(workdir / "store").prepare()
    key = load_or_create_device_key(store.keys)
    chain = Chain(store.chain, key, lambda: ("BENCH-0001", "BENCH-OFFICER"),
                  SimulatedClock().state, "benchmark-boot")
    config = RecorderConfig(segment_seconds=segment_seconds, flush_interval=1.0,
                            pre_event_seconds=0.0)
    recorder = Recorder(loop.layout, store, chain, config, recipients=recipients)
    timeline = Timeline()
    instrumented = instrument(recorder, timeline)
    recorder.start("benchmark")

    # Keep the feeder at most `max_lead_s` of media ahead of the writer, so that feeding
    # and cutting overlap all along (as with a live camera) and memory stays bounded.
    # 0 feeds without waiting. The queue is the recorder's own; only its depth is read.
    packets_per_s = len(loop.packets) * 1_000_000 / loop.length_us
    max_lead = int(max_lead_s * packets_per_s)
    queue = getattr(recorder, "_queue", None) if max_lead > 0 else None

    packets, audio_packets = loop.packets, loop.audio_packets
    outputframe = recorder.outputframe
    perf, n = time.perf_counter, len(schedule)
    call_start = [0.0] * n
    call_s = [0.0] * n
    rotation_call_s: list[float] = []

    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), perf()
    for i, (index, ts, rotation) in enumerate(schedule):
        if queue is not None:
            while queue.qsize() > max_lead:
                time.sleep(0.001)
        packet = packets[index]
        if packet.audio:
            av_packet = audio_packets[index]
            t0 = perf()
            outputframe(None, True, ts, av_packet, True)
        else:
            t0 = perf()
            outputframe(packet.data, packet.keyframe, ts)
        t1 = perf()
        call_start[i], call_s[i] = t0, t1 - t0
        if rotation:
            rotation_call_s.append(t1 - t0)
    feed_end = perf()
    feeder_cpu = time.thread_time() - thread0
    stop_record = recorder.stop("benchmark")
    cpu1, wall1 = time.process_time(), perf()
    recorder.close()
    chain.close()

    fed_video = sum(1 for f in schedule if not packets[f.index].audio)
    return AgentRun(
        store=store.root, fed_video=fed_video, fed_audio=n - fed_video,
        media_s=fed_video / loop.layout.fps, rotations=len(rotation_call_s),
        call_start=call_start, call_s=call_s, rotation_call_s=rotation_call_s,
        cpu_s=cpu1 - cpu0, feeder_cpu_s=feeder_cpu, wall_s=wall1 - wall0,
        feed_wall_s=feed_end - wall0, stop_wall_s=wall1 - feed_end,
        longest_rotation_s=recorder.stats.longest_rotation_s,
        max_queue_depth=recorder.stats.max_queue_depth,
        segments_sealed=recorder.stats.segments_sealed, timeline=timeline,
        instrumented=instrumented, lead_limited=queue is not None, stop_record=stop_record)


# --- 3a. loss and continuity --------------------------------------------------------------


def probe_counts(path: Path) -> dict[str, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "stream=codec_type,nb_read_packets", "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    counts = {"video": 0, "audio": 0}
    for stream in json.loads(out).get("streams", []):
        if stream.get("codec_type") in counts:
            counts[stream["codec_type"]] += int(stream.get("nb_read_packets", 0))
    return counts


def sealed_segments(store: Path) -> list[dict[str, Any]]:
    """The segment_sealed payloads of the chain, in order."""
    payloads = []
    with (store / "chain.jsonl").open("rb") as f:
        for line in f:
            record = json.loads(line)
            if record.get("type") == "segment_sealed":
                payloads.append(record["payload"])
    return payloads


@dataclass
class Integrity:
    segments: int
    probed_video: int
    probed_audio: int
    chain_video: int
    chain_audio: int
    verify_ok: bool
    verify_summary: str
    gaps: int
    overlaps: int
    other_findings: int
    lost_video: int
    lost_audio: int
    doubled_video: int
    doubled_audio: int

    @property
    def lost(self) -> int:
        return self.lost_video + self.lost_audio + self.gaps

    @property
    def doubled(self) -> int:
        return self.doubled_video + self.doubled_audio + self.overlaps


def check_integrity(run: AgentRun) -> Integrity:
    report = verify_store(run.store)
    payloads = sealed_segments(run.store)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        counts = list(pool.map(probe_counts, [run.store / p["file"] for p in payloads]))
    probed_video = sum(c["video"] for c in counts)
    probed_audio = sum(c["audio"] for c in counts)
    kinds = [finding.kind for finding in report.findings]
    return Integrity(
        segments=len(payloads), probed_video=probed_video, probed_audio=probed_audio,
        chain_video=sum(p["video"]["packets"] for p in payloads),
        chain_audio=sum((p["audio"] or {}).get("packets", 0) for p in payloads),
        verify_ok=report.ok, verify_summary=report.summary(),
        gaps=kinds.count("gap"), overlaps=kinds.count("overlap"),
        other_findings=len(kinds) - kinds.count("gap") - kinds.count("overlap"),
        lost_video=max(0, run.fed_video - probed_video),
        lost_audio=max(0, run.fed_audio - probed_audio),
        doubled_video=max(0, probed_video - run.fed_video),
        doubled_audio=max(0, probed_audio - run.fed_audio))


# --- 3b. stalls ---------------------------------------------------------------------------


@dataclass
class Stalls:
    max_s: float
    p50_s: float
    p99_s: float
    p999_s: float
    over_frame: int
    at_rotation_max_s: float
    during_cut_max_s: float | None
    during_cut_calls: int
    longest_open_s: float | None
    longest_close_s: float | None
    longest_seal_s: float | None


def _merge(windows: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end, _ in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def stalls(run: AgentRun, frame_s: float) -> Stalls:
    ordered = sorted(run.call_s)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    during_max: float | None = None
    during_calls = 0
    longest: dict[str, float | None] = {"open": None, "close": None, "seal": None}
    if run.instrumented:
        for start, end, what in run.timeline.windows:
            longest[what] = max(longest[what] or 0.0, end - start)
        merged = _merge(run.timeline.windows)
        starts = [w[0] for w in merged]
        during_max = 0.0
        for t0, dt in zip(run.call_start, run.call_s, strict=True):
            # Overlaps a cut window if the last window starting before the call ends after it.
            i = bisect.bisect_right(starts, t0 + dt) - 1
            if i >= 0 and merged[i][1] >= t0:
                during_calls += 1
                during_max = max(during_max, dt)
    return Stalls(
        max_s=ordered[-1], p50_s=pct(0.5), p99_s=pct(0.99), p999_s=pct(0.999),
        over_frame=sum(1 for dt in run.call_s if dt > frame_s),
        at_rotation_max_s=max(run.rotation_call_s, default=0.0),
        during_cut_max_s=during_max, during_cut_calls=during_calls,
        longest_open_s=longest["open"], longest_close_s=longest["close"],
        longest_seal_s=longest["seal"])


# --- 3d. baseline -------------------------------------------------------------------------


def mux_single(loop: Loop, schedule: list[Fed], path: Path) -> None:
    """The replayed packets in one MPEG-TS, muxed as the recorder muxes them (not timed)."""
    layout = loop.layout
    with av.open(str(path), "w", format="mpegts") as container:
        video = container.add_stream("h264", rate=layout.fps)
        video.width, video.height = layout.width, layout.height
        audio = None
        if layout.audio:
            audio = container.add_stream(layout.audio.codec, rate=layout.audio.sample_rate)
            audio.layout = "mono" if layout.audio.channels == 1 else "stereo"
            audio.codec_context.extradata = layout.audio.extradata
        for fed in schedule:
            packet = loop.packets[fed.index]
            if packet.audio and audio is None:
                continue
            av_packet = av.Packet(packet.data)
            av_packet.pts = av_packet.dts = fed.timestamp
            av_packet.time_base = _MICROSECONDS
            av_packet.is_keyframe = packet.keyframe
            av_packet.stream = audio if packet.audio else video
            container.mux(av_packet)


@dataclass
class Baseline:
    input_bytes: int
    segments: int
    cpu_s: float
    ffmpeg_cpu_s: float
    sha_cpu_s: float
    wall_s: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_baseline(source: Path, folder: Path, segment_seconds: float) -> Baseline:
    """Cut `source` with ffmpeg's segment muxer and hash the pieces; CPU of both children."""
    folder.mkdir()
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(source),
                    "-c", "copy", "-map", "0", "-f", "segment",
                    "-segment_time", f"{segment_seconds:g}", "-reset_timestamps", "0",
                    str(folder / "out%05d.ts")], check=True)
    cpu1 = _children_cpu()
    pieces = sorted(folder.glob("out*.ts"))
    subprocess.run(["sha256sum", *map(str, pieces)], check=True, stdout=subprocess.DEVNULL)
    cpu2, wall1 = _children_cpu(), time.perf_counter()
    return Baseline(input_bytes=source.stat().st_size, segments=len(pieces),
                    cpu_s=cpu2 - cpu0, ffmpeg_cpu_s=cpu1 - cpu0, sha_cpu_s=cpu2 - cpu1,
                    wall_s=wall1 - wall0)


# --- report -------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs, {model}; Python {platform.python_version()}, "
            f"PyAV {av.__version__}")


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.3f} ms"


def _max(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _each(values: list[float], fmt: str = "{:.3f}") -> str:
    return " / ".join(fmt.format(v) for v in values)


@dataclass
class Repeat:
    """One replay into the recorder, checked and measured; big per-call lists are dropped."""

    run: AgentRun
    integrity: Integrity
    stalls: Stalls


def report(args: argparse.Namespace, loop: Loop, repeats: list[Repeat],
           bases: list[Baseline]) -> dict[str, Any]:
    frame_s = 1 / loop.layout.fps
    first = repeats[0].run
    media_s = first.media_s
    agent = [r.run.cpu_s / media_s for r in repeats]
    base = [b.cpu_s / media_s for b in bases]
    agent_med, base_med = statistics.median(agent), statistics.median(base)
    ratio = agent_med / base_med if base_med else math.inf
    pairwise = [a / b if b else math.inf for a, b in zip(agent, base, strict=True)]
    lost = sum(r.integrity.lost for r in repeats)
    doubled = sum(r.integrity.doubled for r in repeats)
    verify_ok = all(r.integrity.verify_ok for r in repeats)
    call_max = max(r.stalls.max_s for r in repeats)
    rotation_max = max(r.run.longest_rotation_s for r in repeats)
    worst_stall = max(call_max, rotation_max)
    n = len(repeats)
    ig = repeats[0].integrity
    rows: list[tuple[str, str]] = [
        ("machine", machine()),
        ("stream", f"{loop.layout.width}x{loop.layout.height} {loop.layout.fps} fps H.264, "
                   f"keyframe every {GOP} frames, AAC "
                   f"{loop.layout.audio.sample_rate if loop.layout.audio else '-'} Hz; "
                   f"loop {loop.length_us / 1e6:g} s of {len(loop.packets)} packets "
                   f"(encoded in {loop.encode_s:.1f} s, not timed)"),
        ("fed, each repeat", f"{first.fed_video} video frames + {first.fed_audio} audio packets "
                             f"= {media_s:.1f} s of media, {first.rotations} rotations, "
                             f"segment {args.segment_seconds:g} s"),
        ("repeats", f"{n} (agent and baseline alternate; CPU figures are medians)"),
        ("", ""),
        ("(a) segments sealed", _each([r.integrity.segments for r in repeats], "{}")
         + f" (expected {first.rotations + 1})"),
        ("    video frames",
         f"fed {first.fed_video}; ffprobe counts in the segments "
         f"{_each([r.integrity.probed_video for r in repeats], '{}')} "
         f"(chain says {_each([r.integrity.chain_video for r in repeats], '{}')})"),
        ("    audio packets",
         f"fed {first.fed_audio}; ffprobe counts in the segments "
         f"{_each([r.integrity.probed_audio for r in repeats], '{}')} "
         f"(chain says {_each([r.integrity.chain_audio for r in repeats], '{}')})"),
        ("    lost, all repeats",
         f"{lost} (video {sum(r.integrity.lost_video for r in repeats)}, audio "
         f"{sum(r.integrity.lost_audio for r in repeats)}, pts gaps "
         f"{sum(r.integrity.gaps for r in repeats)})"),
        ("    doubled, all repeats",
         f"{doubled} (video {sum(r.integrity.doubled_video for r in repeats)}, audio "
         f"{sum(r.integrity.doubled_audio for r in repeats)}, pts overlaps "
         f"{sum(r.integrity.overlaps for r in repeats)})"),
        ("    verify_store",
         next((r.integrity.verify_summary for r in repeats if not r.integrity.verify_ok),
              ig.verify_summary).splitlines()[0]
         + (f" (every one of {n} stores)" if verify_ok and n > 1 else "")),
        ("", ""),
        ("(b) outputframe() max, all calls",
         f"{_ms(call_max)} over {n} x {len(first.call_s)} calls "
         f"({sum(r.stalls.over_frame for r in repeats)} over one frame)"),
        ("    outputframe() p50 / p99 / p99.9 (worst)",
         f"{_ms(max(r.stalls.p50_s for r in repeats))} / "
         f"{_ms(max(r.stalls.p99_s for r in repeats))} / "
         f"{_ms(max(r.stalls.p999_s for r in repeats))}"),
        ("    outputframe() max, rotation keyframes",
         _ms(max(r.stalls.at_rotation_max_s for r in repeats))),
        ("    outputframe() max, while cutting",
         f"{_ms(_max([r.stalls.during_cut_max_s for r in repeats]))} (calls that overlapped "
         "a segment open/close/seal)"),
        ("    writer: longest_rotation_s", f"{_ms(rotation_max)} (each: "
         f"{_each([r.run.longest_rotation_s * 1000 for r in repeats], '{:.1f}')} ms)"),
        ("    open / close / seal, longest",
         f"{_ms(_max([r.stalls.longest_open_s for r in repeats]))} / "
         f"{_ms(_max([r.stalls.longest_close_s for r in repeats]))} / "
         f"{_ms(_max([r.stalls.longest_seal_s for r in repeats]))}"),
        ("    frame interval", _ms(frame_s)),
        ("    writer queue, deepest", f"{max(r.run.max_queue_depth for r in repeats)} packets "
                                      + (f"(lead limit {args.max_lead:g} s of media)"
                                         if first.lead_limited else "(feeder unbounded)")),
        ("", ""),
        ("(c) agent CPU (replay + stop)",
         f"{_each([r.run.cpu_s for r in repeats])} s in "
         f"{_each([r.run.wall_s for r in repeats], '{:.2f}')} s wall (feeder thread "
         f"{_each([r.run.feeder_cpu_s for r in repeats])} s)"),
        ("    agent CPU per recorded second",
         f"{agent_med * 1000:.3f} ms/s (each: {_each([a * 1000 for a in agent])})"),
        ("(d) baseline CPU (ffmpeg + sha256sum)",
         f"{_each([b.cpu_s for b in bases])} s (ffmpeg "
         f"{_each([b.ffmpeg_cpu_s for b in bases])}, sha256sum "
         f"{_each([b.sha_cpu_s for b in bases])}), {bases[0].segments} pieces"),
        ("    baseline CPU per recorded second",
         f"{base_med * 1000:.3f} ms/s (each: {_each([b * 1000 for b in base])})"),
        ("", ""),
        ("(e) ratio agent / baseline", f"{ratio:.2f} (target <= {TARGET_RATIO:g}: "
                                       f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}; "
                                       f"pairwise {_each(pairwise, '{:.2f}')})"),
        ("    longest stall vs frame interval",
         f"{_ms(worst_stall)} vs {_ms(frame_s)}: "
         f"{'under' if worst_stall < frame_s else 'NOT under'} one frame"),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}" if label or value else "")
    print()

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(), "repeats": n,
        "rotations": first.rotations, "segment_seconds": args.segment_seconds,
        "media_s": media_s, "fed_video": first.fed_video, "fed_audio": first.fed_audio,
        "segments": [r.integrity.segments for r in repeats],
        "probed_video": [r.integrity.probed_video for r in repeats],
        "probed_audio": [r.integrity.probed_audio for r in repeats],
        "lost": lost, "doubled": doubled, "verify_ok": verify_ok,
        "outputframe_max_ms": ms(call_max),
        "outputframe_p999_ms": ms(max(r.stalls.p999_s for r in repeats)),
        "outputframe_rotation_max_ms": ms(max(r.stalls.at_rotation_max_s for r in repeats)),
        "outputframe_during_cut_max_ms": ms(_max([r.stalls.during_cut_max_s for r in repeats])),
        "longest_rotation_ms": [ms(r.run.longest_rotation_s) for r in repeats],
        "longest_open_ms": ms(_max([r.stalls.longest_open_s for r in repeats])),
        "longest_close_ms": ms(_max([r.stalls.longest_close_s for r in repeats])),
        "longest_seal_ms": ms(_max([r.stalls.longest_seal_s for r in repeats])),
        "agent_cpu_s": [r.run.cpu_s for r in repeats],
        "feeder_cpu_s": [r.run.feeder_cpu_s for r in repeats],
        "agent_wall_s": [r.run.wall_s for r in repeats],
        "agent_cpu_ms_per_s": [a * 1000 for a in agent],
        "baseline_cpu_s": [b.cpu_s for b in bases],
        "baseline_ffmpeg_cpu_s": [b.ffmpeg_cpu_s for b in bases],
        "baseline_sha_cpu_s": [b.sha_cpu_s for b in bases],
        "baseline_cpu_ms_per_s": [b * 1000 for b in base],
        "agent_cpu_ms_per_s_median": agent_med * 1000,
        "baseline_cpu_ms_per_s_median": base_med * 1000,
        "ratio": ratio, "stall_under_frame": worst_stall < frame_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotations", type=int, default=300,
                        help="segment rotations to feed (default 300)")
    parser.add_argument("--segment-seconds", type=float, default=2.0,
                        help="recorder segment length (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="replays and baseline runs, alternating; CPU figures are their "
                             "medians (default 3)")
    parser.add_argument("--max-lead", type=float, default=1.0, metavar="SECONDS",
                        help="media the feeder may run ahead of the writer (default 1; "
                             "0 = unbounded)")
    parser.add_argument("--workdir", type=Path,
                        help="keep the stores and baseline files here (default: a temporary "
                             "folder, removed afterwards)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.rotations < 1 or args.repeats < 1 or args.segment_seconds * FPS < GOP:
        parser.error("need --rotations >= 1, --repeats >= 1 and --segment-seconds >= one "
                     "GOP (1 s)")
    for tool in ("ffmpeg", "ffprobe", "sha256sum"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH")

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=False)
        workdir = args.workdir
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bodycam-rotations-"))
    try:
        print(f"pre-encoding {CAPTURE_FRAMES} frames with the simulated camera ...", flush=True)
        loop = capture(workdir, CAPTURE_FRAMES)
        schedule = replay_schedule(loop, args.rotations, int(args.segment_seconds * 1_000_000))
        print("muxing the same packets into one MPEG-TS for the baseline (not timed) ...",
              flush=True)
        source = workdir / "baseline-in.ts"
        mux_single(loop, schedule, source)
        repeats: list[Repeat] = []
        bases: list[Baseline] = []
        for r in range(args.repeats):
            tag = f"[{r + 1}/{args.repeats}]"
            print(f"{tag} replaying {len(schedule)} packets into the recorder ...", flush=True)
            run = run_agent(loop, schedule, workdir / f"agent-{r + 1}", args.segment_seconds,
                            args.max_lead)
            print(f"{tag} counting packets in the sealed segments, verifying the store ...",
                  flush=True)
            integrity = check_integrity(run)
            repeats.append(Repeat(run, integrity, stalls(run, 1 / loop.layout.fps)))
            run.call_start, run.timeline.windows = [], []
            print(f"{tag} baseline: ffmpeg -f segment, then sha256sum ...", flush=True)
            bases.append(run_baseline(source, workdir / f"baseline-{r + 1}",
                                      args.segment_seconds))
            if not args.workdir:
                shutil.rmtree(run.store, ignore_errors=True)
                shutil.rmtree(workdir / f"baseline-{r + 1}", ignore_errors=True)
        figures = report(args, loop, repeats, bases)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if figures["lost"] or figures["doubled"] or not figures["verify_ok"]:
        print("FAIL: frames lost or doubled, or the store does not verify", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
