"""The time and identity overlay burned into every frame, as body cameras do.

A reviewer must be able to tell from any frame alone when it was taken and by which
device and officer. The time is shown as the officer and the court read it: local time
in the agency's zone with its offset (`2026-12-02 22:47:10.123 +08:00`, `[camera]
overlay_timezone`); the chain keeps UTC. The text is drawn white on a black bar across
the top of the frame.

Each character is rendered once with Pillow (a glyph cache), and the bar is composed
from glyphs. Digits sit in cells of one width, so while only digits change (the clock
ticking) every character keeps its place and only the changed cells are redrawn: a
frame costs a few small copies and the bar's copy into the frame. Any other change (a
new officer, a new offset) lays the bar out again. `benchmarks/overlay.py` measures it.

Two frame layouts are served: packed RGB-like arrays (height, width, 3 or 4; any
channel order, since the text is grey) and planar YUV420 as picamera2's
`MappedArray` presents it (height * 3 / 2 rows of `stride` bytes: Y, then U and V
with two chroma rows per array row), where only luma is drawn and the chroma under
the bar is set neutral.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agent.config import Config

# Limited-range luma (BT.601/709): what the encoders expect for black and white.
_Y_BLACK, _Y_WHITE, _C_NEUTRAL = 16, 235, 128
_DIGITS = "0123456789"
_MARGIN_X, _MARGIN_Y = 4, 2


def local_stamp(wall: datetime, zone: tzinfo) -> str:
    """Local date and time with milliseconds and the zone's offset, e.g.
    2026-12-02 22:47:10.123 +08:00."""
    local = wall.astimezone(zone)
    offset = local.strftime("%z")
    return (local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d} "
            f"{offset[:3]}:{offset[3:]}")


class _Glyphs:
    """Each character drawn once, as a (bar height, advance) grey strip; digits share the
    widest digit's advance, so a number keeps its width whatever its value."""

    def __init__(self, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, height: int) -> None:
        self._font = font
        self._height = height
        self.digit_width = max(self._advance(d) for d in _DIGITS)
        self._cache: dict[str, np.ndarray] = {}

    def _advance(self, char: str) -> int:
        return max(1, math.ceil(self._font.getlength(char)))

    def width(self, char: str) -> int:
        return self.digit_width if char in _DIGITS else self._advance(char)

    def __getitem__(self, char: str) -> np.ndarray:
        glyph = self._cache.get(char)
        if glyph is None:
            image = Image.new("L", (self.width(char), self._height), 0)
            ImageDraw.Draw(image).text((0, _MARGIN_Y), char, fill=255, font=self._font)
            glyph = self._cache[char] = np.asarray(image)
        return glyph


def overlay_for(config: Config, width: int, height: int, officer: Callable[[], str] | None,
                position: Callable[[], str] | None = None) -> Overlay | None:
    """The overlay a camera of `width` x `height` burns in, as `[camera]` asks; `officer`
    says who wears the device now (after a dock assigned one), else the configured one."""
    cam = config.camera
    if not cam.overlay:
        return None
    return Overlay(width, height, cam.overlay_fields, config.device.id,
                   officer or (lambda: config.device.officer), ZoneInfo(cam.overlay_timezone),
                   position or (lambda: ""))


class Overlay:
    def __init__(self, width: int, height: int, fields: Sequence[str], device_id: str,
                 officer: Callable[[], str], zone: tzinfo = UTC,
                 position: Callable[[], str] = lambda: "") -> None:
        self.width = width
        self._fields = list(fields)
        self._device_id = device_id
        self._officer = officer
        self._position = position
        self._zone = zone
        self._font_size = max(10, height // 24)
        self.bar_height = self._font_size * 3 // 2 + 4
        self._glyphs = _Glyphs(ImageFont.load_default(size=self._font_size), self.bar_height)
        # The bar as grey levels, and as each frame layout wants it, kept cell by cell.
        self._strip = np.zeros((self.bar_height, width), np.uint8)
        self._luma = np.full((self.bar_height, width), _Y_BLACK, np.uint8)
        self._packed = np.zeros((self.bar_height, width, 3), np.uint8)
        self._text = ""
        self._cells: list[tuple[int, int]] = []  # (x, width) of each character drawn

    def text(self, wall: datetime) -> str:
        parts = {"time": lambda: local_stamp(wall, self._zone),
                 "device": lambda: self._device_id, "officer": self._officer,
                 "position": self._position}
        return "  ".join(value for field in self._fields if (value := parts[field]()))

    def strip(self, wall: datetime) -> np.ndarray:
        """The bar for this moment: (bar_height, width) grey levels, 0 black, 255 white."""
        text = self.text(wall)
        if text != self._text:
            if _layout(text) == _layout(self._text):
                self._redraw(text)
            else:
                self._lay_out(text)
            self._text = text
        return self._strip

    def _lay_out(self, text: str) -> None:
        self._strip[:] = 0
        self._luma[:] = _Y_BLACK
        self._packed[:] = 0
        self._cells = []
        x = _MARGIN_X
        for char in text:
            width = self._glyphs.width(char)
            self._cells.append((x, width))
            self._draw(char, x, width)
            x += width

    def _redraw(self, text: str) -> None:
        """Only the cells whose character changed (digits: same cells, same widths)."""
        for char, before, (x, width) in zip(text, self._text, self._cells, strict=True):
            if char != before:
                self._draw(char, x, width)

    def _draw(self, char: str, x: int, width: int) -> None:
        visible = min(width, self.width - x)  # a text longer than the frame is cut
        if visible > 0:
            cell = self._glyphs[char][:, :visible]
            self._strip[:, x:x + visible] = cell
            self._luma[:, x:x + visible] = _Y_BLACK + (
                cell.astype(np.uint16) * (_Y_WHITE - _Y_BLACK) // 255).astype(np.uint8)
            self._packed[:, x:x + visible] = cell[:, :, None]

    def burn_packed(self, frame: np.ndarray, wall: datetime) -> None:
        """Draw into an RGB/BGR/XBGR/XRGB frame (height, width, channels), in place."""
        self.strip(wall)
        frame[: self.bar_height, : self.width, :3] = self._packed

    def burn_yuv420(self, planes: np.ndarray, height: int, wall: datetime) -> None:
        """Draw into planar YUV420 (height * 3 // 2 rows of stride bytes), in place."""
        self.strip(wall)
        bar = self.bar_height
        planes[:bar, : self.width] = self._luma
        # Each array row of U (then V) holds two chroma rows: the bar's chroma is
        # ceil(bar / 2) chroma rows, so ceil(bar / 4) array rows of each plane.
        chroma_rows = -(-bar // 4)
        for plane_start in (height, height + height // 4):
            planes[plane_start:plane_start + chroma_rows, :] = _C_NEUTRAL


def _layout(text: str) -> str:
    """What fixes every character's place: the text with each digit made the same."""
    return text.translate(_SAME_DIGITS)


_SAME_DIGITS = str.maketrans(_DIGITS, "0" * len(_DIGITS))
