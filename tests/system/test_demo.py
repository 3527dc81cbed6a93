"""`bodycam demo` records what --seconds asks for and says up front how long it takes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from agent.config import load_config
from agent.demo import plan

# A loaded two-core machine: how much later than its estimate a demo may end.
SLACK_S = 15.0


def test_the_demo_records_for_seconds_and_ends_about_when_it_said(write_config,
                                                                   tmp_path: Path) -> None:
    config = write_config(realtime="true", segment_seconds=1.0, notice="true",
                          languages='["en"]')
    seconds = 3.0
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "agent", "demo", "--config", str(config),
                             "--store", str(tmp_path / "demo"), "--seconds", f"{seconds:g}"],
                            capture_output=True, text=True, timeout=120)
    took = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()

    estimate = plan(*load_config(config), seconds)
    assert lines[0].startswith(f"demo: about {estimate.total:.0f} s: "), lines[0]
    assert f"{seconds:g} s of recording in two recordings" in lines[0]
    # The spoken notices and the voice note come after the recording, not inside it.
    assert estimate.speech_after > 10
    assert seconds < took < estimate.total + SLACK_S

    duration = next(line for line in lines if line.startswith("duration:"))
    found = re.search(r"([\d.]+) s of video: ([\d.]+) s from the presses on \(--seconds 3\) "
                      r"and ([\d.]+) s of pre-event buffer", duration)
    assert found, duration
    total, pressed, pre_event = map(float, found.groups())
    assert abs(pressed - seconds) <= 1.0, duration
    assert abs(total - pressed - pre_event) <= 0.11 and pre_event <= 2.1  # [recorder] 2 s
    assert "explained (ended by max_length)" in next(
        line for line in lines if line.startswith("voice note:"))
    assert re.match(r"run time:   [\d.]+ s \(about \d+ s estimated\)", lines[-1]), lines[-1]


def test_seconds_must_hold_both_stop_gestures(write_config, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "agent", "demo", "--config",
                             str(write_config()), "--store", str(tmp_path / "demo"),
                             "--seconds", "0.8"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--seconds 0.8: the demo records twice" in result.stderr
