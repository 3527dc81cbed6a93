"""Which Raspberry Pi this is, and the defaults that depend on it: the published power
figures, and the camera profile its H.264 encoder carries.

The model is the device tree's own string (/proc/device-tree/model, e.g. "Raspberry Pi 5
Model B Rev 1.0"). The draws are published figures, not measured here; docs/hardware.md
says where each comes from. They stand in for `[battery] recording_draw_w` when it is
not set, so the runtime shown to the officer is not an idle figure. The profile stands
in for `[camera] profile = "auto"`: 1080p30, the tenders' default, where the VC4 H.264
block encodes it (Pi 4, Pi 400, CM4); 720p30 where the CPU encodes (Pi 5) or where it
was not chosen (docs/hardware.md, Resolution).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from agent.config import ProfileName

MODEL_PATH = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class Board:
    name: str
    recording_draw_w: float  # camera, encoder, storage and radio while recording
    camera_profile: ProfileName  # what [camera] profile = "auto" records


# First match wins: "Raspberry Pi Zero 2 W" must come before a bare "Raspberry Pi Zero".
_BOARDS = (
    ("Raspberry Pi 5", Board("Raspberry Pi 5", 6.5, "720p30")),  # software H.264 encoder
    ("Raspberry Pi Compute Module 5", Board("Raspberry Pi Compute Module 5", 6.5, "720p30")),
    ("Raspberry Pi 4", Board("Raspberry Pi 4", 4.5, "1080p30")),  # hardware H.264 encoder
    ("Raspberry Pi Compute Module 4", Board("Raspberry Pi Compute Module 4", 4.5, "1080p30")),
    ("Raspberry Pi Zero 2 W", Board("Raspberry Pi Zero 2 W", 2.0, "720p30")),
)
# Not a Pi we know: the Pi 4's draw, neither the lowest nor the highest; 720p30, which
# any board that runs the agent encodes.
UNKNOWN = Board("unknown board", 4.5, "720p30")


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
