"""picamera2.platform: which ISP the board has. The fake says VC4 unless told PISP."""

import enum
import os


class Platform(enum.Enum):
    VC4 = "vc4"
    PISP = "pisp"


def get_platform() -> Platform:
    return Platform(os.environ.get("FAKE_PICAMERA2_PLATFORM", "vc4"))
