"""The 1080p30 profile on the simulated device records real H.264 at 1920x1080."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent.evidence.chain import read_bodies
from tests.support.device import record_segments


def test_the_1080p30_profile_records_full_hd_h264(write_config, tmp_path: Path) -> None:
    path = write_config()
    text = path.read_text()
    path.write_text(text.replace("width = 320\nheight = 240\nfps = 30\n", 'profile = "1080p30"\n')
                    .replace("bitrate = 400000\n", ""))
    record_segments(path, 2)
    store = tmp_path / "store"
    segments = [body["payload"] for body in read_bodies(store / "chain.jsonl")
                if body["type"] == "segment_sealed"]
    assert len(segments) >= 2
    for segment in segments:
        assert (segment["video"]["width"], segment["video"]["height"]) == (1920, 1080)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
             "stream=codec_name,width,height,r_frame_rate", "-of", "json",
             str(store / segment["file"])], capture_output=True, text=True, check=True)
        assert json.loads(probe.stdout)["streams"] == [
            {"codec_name": "h264", "width": 1920, "height": 1080, "r_frame_rate": "30/1"}]
