"""The camera's profile: a named choice ("720p30", "1080p30") or the board's own ("auto"),
refused in one line naming the bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from hal.board import board_from_model

OWN_SIZE = "width = 320\nheight = 240\nfps = 30\n"


def with_camera(path: Path, lines: str) -> Path:
    """The test device's config with its own size replaced by `lines`."""
    text = path.read_text()
    assert OWN_SIZE in text
    path.write_text(text.replace(OWN_SIZE, lines))
    return path


@pytest.mark.parametrize(("model", "size"), [
    ("Raspberry Pi 4 Model B Rev 1.5", (1920, 1080)),
    ("Raspberry Pi Compute Module 4 Rev 1.1", (1920, 1080)),
    ("Raspberry Pi 400 Rev 1.1", (1920, 1080)),
    ("Raspberry Pi 5 Model B Rev 1.0", (1280, 720)),
    ("Raspberry Pi Zero 2 W Rev 1.0", (1280, 720)),
    ("a laptop", (1280, 720)),
])
def test_auto_is_the_boards_profile(write_config, model: str, size: tuple[int, int]) -> None:
    path = with_camera(write_config(), 'profile = "auto"\n')
    config, _ = load_config(path)
    mode = config.camera.mode(board_from_model(model).camera_profile)
    assert ((mode.width, mode.height), mode.fps) == (size, 30)


def test_a_named_profile_is_the_same_on_every_board(write_config) -> None:
    path = with_camera(write_config(), 'profile = "1080p30"\n')
    text = path.read_text()
    path.write_text(text.replace("bitrate = 400000\n", ""))
    config, _ = load_config(path)
    for model in ("Raspberry Pi 5 Model B Rev 1.0", "Raspberry Pi 4 Model B Rev 1.5"):
        mode = config.camera.mode(board_from_model(model).camera_profile)
        assert (mode.width, mode.height, mode.fps, mode.bitrate) == (1920, 1080, 30, 9_000_000)


BAD = {
    "unknown profile": ('profile = "4k"\n', "[camera] profile = '4k': Input should be "
                        "'auto', '720p30' or '1080p30'"),
    "profile and a size": ('profile = "1080p30"\nwidth = 640\n',
                           "[camera] profile = '1080p30' and width: the profile sets the size "
                           "and rate; set one or the other"),
    "half a size": ("width = 640\n", "[camera] width without height, fps: a size of one's own "
                    "needs width, height, fps and bitrate (or a profile)"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_profile_is_one_line_naming_it_and_exit_2(write_config, name: str) -> None:
    lines, message = BAD[name]
    path = with_camera(write_config(), lines)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"config error in {path}: {message}"
    result = subprocess.run([sys.executable, "-m", "agent", "selfcheck", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"bodycam: config error in {path}: {message}"]
