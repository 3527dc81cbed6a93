"""Recording on the simulated device: real H.264 in real MPEG-TS files, read back by ffprobe."""

from __future__ import annotations

import itertools
import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

from agent.evidence.chain import read_bodies
from tests.support.device import record_segments, running_daemon, wait_for

VIDEO_TICK = Fraction(1, 30)
AUDIO_TICK = Fraction(1024, 48000)
TOLERANCE = Fraction(1, 90000)  # one MPEG-TS clock tick of rounding


def chain(store: Path) -> list[dict[str, Any]]:
    return read_bodies(store / "chain.jsonl")


def sealed_segments(store: Path) -> list[dict[str, Any]]:
    return [r["payload"] for r in chain(store) if r["type"] == "segment_sealed"]


def ffprobe_packets(path: Path) -> dict[str, list[dict[str, str]]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=codec_type,pts_time,flags",
         "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    packets: dict[str, list[dict[str, str]]] = {"video": [], "audio": []}
    for packet in json.loads(out)["packets"]:
        packets[packet["codec_type"]].append(packet)
    return packets


def test_every_sealed_segment_plays_and_starts_on_a_keyframe(recorded_store: Path) -> None:
    segments = sealed_segments(recorded_store)
    assert len(segments) >= 5
    for segment in segments:
        path = recorded_store / segment["file"]
        streams = json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries",
             "stream=codec_name,width,height", "-of", "json", str(path)],
            check=True, capture_output=True, text=True).stdout)["streams"]
        assert {s["codec_name"] for s in streams} == {"h264", "aac"}
        assert any(s.get("width") == 320 and s.get("height") == 240 for s in streams)
        packets = ffprobe_packets(path)
        assert packets["video"][0]["flags"].startswith("K"), f"{path} does not open on a keyframe"
        assert len(packets["video"]) == segment["video"]["packets"]
        assert len(packets["audio"]) == segment["audio"]["packets"]
        # Decodes on its own: the first frame comes out of a decoder fed only this file.
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "null",
                        "-"], check=True)


def test_fifty_rotations_lose_and_double_nothing(write_config, tmp_path: Path) -> None:
    config = write_config(segment_seconds=0.5, gop=15)
    record_segments(config, 52)
    store = tmp_path / "store"
    segments = sealed_segments(store)
    assert len(segments) >= 52
    stop = next(r["payload"] for r in chain(store) if r["type"] == "record_stop")
    for stream, tick in (("video", VIDEO_TICK), ("audio", AUDIO_TICK)):
        times = [Fraction(p["pts_time"]) for segment in segments
                 for p in ffprobe_packets(store / segment["file"])[stream]]
        steps = [b - a for a, b in itertools.pairwise(times)]
        bad = [(i, float(step)) for i, step in enumerate(steps) if abs(step - tick) > TOLERANCE]
        assert not bad, f"{stream}: {len(bad)} steps are not one packet long: {bad[:5]}"
        assert len(times) == stop[f"{stream}_frames" if stream == "video" else "audio_packets"]


def test_pre_event_buffer_lands_in_the_first_segment(write_config, tmp_path: Path) -> None:
    config = write_config(pre_event_seconds=2.0, segment_seconds=5.0, gop=15)
    with running_daemon(config) as daemon:
        wait_for(lambda: daemon.camera.frames_encoded >= 150, what="5 s of standby video")
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a segment")
    first = sealed_segments(tmp_path / "store")[0]
    pre = first["pre_event"]
    # At least the configured 2 s, and never more than one keyframe interval beyond it.
    assert 2_000_000 <= pre["duration_us"] <= 2_000_000 + 500_000 + 34_000
    assert pre["first_pts_us"] == first["video"]["first_pts_us"]
    assert pre["audio_packets"] == 0, "pre-event audio is off by default"
    packets = ffprobe_packets(tmp_path / "store" / first["file"])
    video_start = Fraction(packets["video"][0]["pts_time"])
    audio_start = Fraction(packets["audio"][0]["pts_time"])
    assert len(packets["video"]) >= 60
    assert audio_start - video_start >= Fraction(19, 10), "audio must begin at the press"


def test_no_pre_event_still_starts_decodable(write_config, tmp_path: Path) -> None:
    config = write_config(pre_event_seconds=0.0)
    with running_daemon(config) as daemon:
        wait_for(lambda: daemon.camera.frames_encoded >= 90, what="3 s of standby video")
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a segment")
    first = sealed_segments(tmp_path / "store")[0]
    assert first["pre_event"]["duration_us"] <= 500_000 + 34_000
    packets = ffprobe_packets(tmp_path / "store" / first["file"])
    assert packets["video"][0]["flags"].startswith("K")
