"""The time and identity overlay burned into every frame, as body cameras do.

A reviewer must be able to tell from any frame alone when it was taken (UTC, with
the Z) and by which device and officer. The text is drawn white on a black bar
across the top of the frame. It is rendered once per distinct text with Pillow as a
grey-level strip and copied into the frame, so the per-frame cost is one small
array copy plus one text render when the text changes (every frame, as the
time carries milliseconds); `benchmarks/overlay.py` measures it.

Two frame layouts are served: packed RGB-like arrays (height, width, 3 or 4; any
channel order, since the text is grey) and planar YUV420 as picamera2's
`MappedArray` presents it (height * 3 / 2 rows of `stride` bytes: Y, then U and V
with two chroma rows per array row), where only luma is drawn and the chroma under
the bar is set neutral.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Limited-range luma (BT.601/709): what the encoders expect for black and white.
_Y_BLACK, _Y_WHITE, _C_NEUTRAL = 16, 235, 128


def utc_stamp(wall: datetime) -> str:
    """ISO 8601 UTC with milliseconds and the Z, e.g. 2026-11-28T08:24:26.123Z."""
    return wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond // 1000:03d}Z"


class Overlay:
    def __init__(self, width: int, height: int, fields: Sequence[str], device_id: str,
                 officer: str) -> None:
        self.width = width
        self._fields = list(fields)
        self._device_id = device_id
        self._officer = officer
        self._font_size = max(10, height // 24)
        self._font = ImageFont.load_default(size=self._font_size)
        self.bar_height = self._font_size * 3 // 2 + 4
        self._cached: tuple[str, np.ndarray] | None = None

    def text(self, wall: datetime) -> str:
        parts = {"time": lambda: utc_stamp(wall), "device": lambda: self._device_id,
                 "officer": lambda: self._officer}
        return "  ".join(value for field in self._fields if (value := parts[field]()))

    def strip(self, wall: datetime) -> np.ndarray:
        """The bar for this moment: (bar_height, width) grey levels, 0 black, 255 white."""
        text = self.text(wall)
        if self._cached is None or self._cached[0] != text:
            image = Image.new("L", (self.width, self.bar_height), 0)
            ImageDraw.Draw(image).text((4, 2), text, fill=255, font=self._font)
            self._cached = (text, np.asarray(image))
        return self._cached[1]

    def burn_packed(self, frame: np.ndarray, wall: datetime) -> None:
        """Draw into an RGB/BGR/XBGR/XRGB frame (height, width, channels), in place."""
        strip = self.strip(wall)
        frame[: self.bar_height, : self.width, :3] = strip[:, :, None]

    def burn_yuv420(self, planes: np.ndarray, height: int, wall: datetime) -> None:
        """Draw into planar YUV420 (height * 3 // 2 rows of stride bytes), in place."""
        strip = self.strip(wall)
        bar = self.bar_height
        planes[:bar, : self.width] = _Y_BLACK + (strip.astype(np.uint16)
                                                 * (_Y_WHITE - _Y_BLACK) // 255).astype(np.uint8)
        # Each array row of U (then V) holds two chroma rows: the bar's chroma is
        # ceil(bar / 2) chroma rows, so ceil(bar / 4) array rows of each plane.
        chroma_rows = -(-bar // 4)
        for plane_start in (height, height + height // 4):
            planes[plane_start:plane_start + chroma_rows, :] = _C_NEUTRAL
