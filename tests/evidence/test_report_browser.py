"""The report as a reader sees it: rendered by a real Chromium (the distribution's, headless),
the screenshot showing the timeline where the records put it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from agent.evidence.report.page import COLOURS, LANE_BACKGROUND, render
from agent.evidence.report.source import StoreReport, Window
from agent.evidence.report.timeline import analyse
from agent.evidence.verify import Report
from tests.support import report_chain as known
from tests.support.report_chain import at, us

WIDTH = 1100


def screenshot(page: Path, out: Path, profile: Path) -> Image.Image:
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is not installed (scripts/setup installs Debian's chromium)"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                    "--force-device-scale-factor=1", "--hide-scrollbars",
                    f"--screenshot={out}", f"--window-size={WIDTH},1600", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return Image.open(out).convert("RGB")


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def runs(image: Image.Image, y: int, colour: str) -> list[tuple[int, int]]:
    """(first x, last x) of each run of exactly `colour` on row y."""
    wanted, found, start = rgb(colour), [], None
    for x in range(image.width + 1):
        hit = x < image.width and image.getpixel((x, y)) == wanted
        if hit and start is None:
            start = x
        elif not hit and start is not None:
            found.append((start, x - 1))
            start = None
    return found


@pytest.mark.system  # a browser: seconds on a loaded two-core machine
def test_the_shift_timeline_is_drawn_where_the_records_put_it(tmp_path: Path) -> None:
    shift = analyse(known.shift_records())[0]
    page = tmp_path / "report.html"
    page.write_text(render([StoreReport("store", "TEST-0001", Report("store", ""), [shift], 2)],
                           Window(), us(at(11, 0))), encoding="utf-8")
    image = screenshot(page, tmp_path / "shot.png", tmp_path / "profile")

    # The first timeline's top lane (recording): the first rows mostly of the lanes' colour.
    lanes = [y for y in range(image.height) if sum(
        1 for x in range(0, image.width, 4) if image.getpixel((x, y)) == rgb(LANE_BACKGROUND)
    ) > image.width // 8]
    assert lanes, "no timeline in the screenshot"
    top = lanes[0]
    plot = runs(image, top, LANE_BACKGROUND)  # above the bars, crossed by the grid lines
    left, right = plot[0][0], plot[-1][1]
    middle = top + 9

    def x_of(moment: int) -> float:
        return left + (moment - shift.start) * (right + 1 - left) / (shift.end - shift.start)

    # Incident A's first recording begins with its pre-event buffer, then video.
    pre_event = runs(image, middle, COLOURS["pre_event"])
    video = runs(image, middle, COLOURS["video"])
    assert pre_event and video, (pre_event, video)
    assert abs(pre_event[0][0] - x_of(us(at(8, 10)) - 2_000_000)) <= 2
    assert abs(video[0][0] - x_of(us(at(8, 10)))) <= 2
    assert abs(video[0][1] - x_of(us(at(8, 20)))) <= 2
    # The camera fault's gap, unexplained, from 08:20 to 08:23; the audio-only recording.
    unexplained = runs(image, middle, COLOURS["unexplained"])
    assert len(unexplained) == 1 and abs(unexplained[0][0] - x_of(us(at(8, 20)))) <= 2
    assert abs(unexplained[0][1] - x_of(us(at(8, 23)))) <= 2
    audio = runs(image, middle, COLOURS["audio"])
    assert audio and abs(audio[0][0] - x_of(us(at(8, 31)))) <= 2
    # The marks lane holds the mark and the photo; the battery lane the alarm.
    marks_lane = range(top + 2 * 23, top + 2 * 23 + 18)
    for kind in ("mark", "photo"):
        assert any(runs(image, y, COLOURS[kind]) for y in marks_lane), kind
    battery = runs(image, top + 4 * 23 + 9, COLOURS["battery"])
    assert battery and abs(battery[0][0] - x_of(us(at(9, 20)))) <= 2
