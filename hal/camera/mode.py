"""What the camera records on this board: `[camera] profile = "auto"` resolved by the board
(hal/board.py), the one place the size, rate and bitrate are read from."""

from __future__ import annotations

from agent.config import Config, ProfileName, VideoMode
from hal.board import this_board


def video_mode(config: Config) -> VideoMode:
    return config.camera.mode(this_board().camera_profile)


def profile_name(config: Config) -> ProfileName | None:
    """The profile recorded on this board; None for a size of one's own."""
    return config.camera.profile_for(this_board().camera_profile)


def recording_bitrate(config: Config) -> int:
    """Bits per second of recording, video and audio: what storage time is reckoned from."""
    return video_mode(config).bitrate + (config.audio.bitrate if config.audio.enabled else 0)
