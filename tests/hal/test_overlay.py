"""The overlay: local time with the agency's offset, the officer who wears the device now,
and a bar drawn cell by cell that is always the bar drawn whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from hal.camera.overlay import Overlay, local_stamp

SHANGHAI = ZoneInfo("Asia/Shanghai")
FIELDS = ["time", "device", "officer"]
AT = datetime(2026, 12, 2, 14, 47, 10, 123_000, tzinfo=UTC)


def test_the_time_is_local_with_its_offset() -> None:
    assert local_stamp(AT, SHANGHAI) == "2026-12-02 22:47:10.123 +08:00"
    assert local_stamp(AT, UTC) == "2026-12-02 14:47:10.123 +00:00"
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC)  # a zone with daylight saving time
    assert local_stamp(summer, ZoneInfo("Europe/Berlin")) == "2026-07-01 14:00:00.000 +02:00"
    overlay = Overlay(1280, 720, FIELDS, "BWC-0001", lambda: "4711", SHANGHAI)
    assert overlay.text(AT) == "2026-12-02 22:47:10.123 +08:00  BWC-0001  4711"


def test_the_position_follows_the_officer_and_is_left_out_while_unknown() -> None:
    place = [""]
    overlay = Overlay(1280, 720, [*FIELDS, "position"], "BWC-0001", lambda: "4711", SHANGHAI,
                      lambda: place[0])
    assert overlay.text(AT) == "2026-12-02 22:47:10.123 +08:00  BWC-0001  4711"
    place[0] = "31.23042N 121.47370E"
    assert overlay.text(AT) == ("2026-12-02 22:47:10.123 +08:00  BWC-0001  4711  "
                                "31.23042N 121.47370E")


def test_a_bar_redrawn_cell_by_cell_is_the_bar_drawn_whole() -> None:
    """Thirty seconds of frames, across a minute, an hour and a day: each frame's bar is
    byte for byte what a fresh overlay draws for that moment."""
    running = Overlay(1280, 720, FIELDS, "BWC-0001", lambda: "4711", SHANGHAI)
    start = datetime(2026, 12, 2, 15, 59, 45, tzinfo=UTC)  # 23:59:45 in Shanghai
    for index in range(0, 900, 7):
        wall = start + timedelta(microseconds=index * 1_000_000 // 30)
        fresh = Overlay(1280, 720, FIELDS, "BWC-0001", lambda: "4711", SHANGHAI)
        assert np.array_equal(running.strip(wall), fresh.strip(wall)), wall


def test_the_officer_assigned_at_the_dock_is_burned_in_from_the_next_frame() -> None:
    officer = ["4711"]
    overlay = Overlay(640, 480, FIELDS, "BWC-0001", lambda: officer[0], UTC)
    before = overlay.strip(AT).copy()
    officer[0] = "0815"
    after = overlay.strip(AT)
    assert not np.array_equal(before, after)
    fresh = Overlay(640, 480, FIELDS, "BWC-0001", lambda: "0815", UTC)
    assert np.array_equal(after, fresh.strip(AT))


def test_every_frame_layout_gets_the_same_bar() -> None:
    overlay = Overlay(320, 240, FIELDS, "BWC-0001", lambda: "4711", SHANGHAI)
    grey = overlay.strip(AT).copy()
    packed = np.zeros((240, 320, 3), np.uint8)
    overlay.burn_packed(packed, AT)
    assert np.array_equal(packed[:overlay.bar_height, :, 1], grey)
    planes = np.full((240 * 3 // 2, 320), 128, np.uint8)
    overlay.burn_yuv420(planes, 240, AT)
    luma = planes[:overlay.bar_height].astype(int)
    assert luma.min() == 16 and 200 < luma.max() <= 235  # limited range: white text on black
    assert np.array_equal(luma > 125, grey > 127)
