"""Which Raspberry Pi this is, and the published power figures the defaults come from.

The model is the device tree's own string (/proc/device-tree/model, e.g. "Raspberry Pi 5
Model B Rev 1.0"). The draws are published figures, not measured here; docs/hardware.md
says where each comes from. They stand in for `[battery] recording_draw_w` when it is
not set, so the runtime shown to the officer is not an idle figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

MODEL_PATH = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class Board:
    name: str
    recording_draw_w: float  # camera, encoder, storage and radio while recording


# First match wins: "Raspberry Pi Zero 2 W" must come before a bare "Raspberry Pi Zero".
_BOARDS = (
    ("Raspberry Pi 5", Board("Raspberry Pi 5", 6.5)),            # software H.264 encoder
    ("Raspberry Pi Compute Module 5", Board("Raspberry Pi Compute Module 5", 6.5)),
    ("Raspberry Pi 4", Board("Raspberry Pi 4", 4.5)),            # hardware H.264 encoder
    ("Raspberry Pi Compute Module 4", Board("Raspberry Pi Compute Module 4", 4.5)),
    ("Raspberry Pi Zero 2 W", Board("Raspberry Pi Zero 2 W", 2.0)),
)
# Not a Pi we know: the Pi 4's figure, neither the lowest nor the highest.
UNKNOWN = Board("unknown board", 4.5)


def board_from_model(model: str) -> Board:
    return next((board for prefix, board in _BOARDS if model.startswith(prefix)), UNKNOWN)


@cache
def this_board(model_path: Path = MODEL_PATH) -> Board:
    """The board this runs on; UNKNOWN when the device tree does not say (not a Pi)."""
    try:
        model = model_path.read_bytes().rstrip(b"\0").decode("ascii", "replace")
    except OSError:
        return UNKNOWN
    return board_from_model(model)
