"""A bad configuration is refused at start, naming the file, the key and the value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config


def test_shipped_configs_are_valid(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("sim.toml", "default.toml"):
        config, _ = load_config(repo / "config" / name, store=tmp_path / name)
        assert config.recorder.segment_seconds > 0


def test_embedded_default_is_the_simulated_device(tmp_path: Path) -> None:
    config, path = load_config(None, store=tmp_path)
    assert path.name == "sim.toml"
    assert config.camera.backend == "sim" and config.gpio.pin_factory == "mock"


def edit(source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new))
    return source


BAD = {
    "unknown key": ("segment_seconds = 1.0", "segment_secs = 1.0",
                    "unknown key [recorder] segment_secs"),
    "wrong type": ("fps = 30", 'fps = "30"', "[camera] fps = '30': Input should be a valid "
                   "integer"),
    "negative segment": ("segment_seconds = 1.0", "segment_seconds = -5.0",
                         "[recorder] segment_seconds = -5.0: Input should be greater than 0"),
    "GOP longer than segment": ("keyframe_interval = 15", "keyframe_interval = 90",
                                "[camera] keyframe_interval = 90 frames at 30 fps is 3 s, "
                                "longer than [recorder] segment_seconds = 1"),
    "pre-event too long": ("pre_event_seconds = 2.0", "pre_event_seconds = 121.0",
                           "[recorder] pre_event_seconds = 121.0: Input should be less than or "
                           "equal to 120"),
    "missing section": ("[gpio]", "[gpioo]", "unknown key [gpioo]"),
    "unknown time zone": ("fps = 30", 'fps = 30\noverlay_timezone = "Asia/Beijing"',
                          "[camera] overlay_timezone = 'Asia/Beijing': "
                          "'Asia/Beijing' is not a time zone the system knows"),
    "bad TOML": ("fps = 30", "fps = = 30", "not valid TOML"),
    "retention under a year (Art. 21)": (
        "reminder_interval_s = 120", "reminder_interval_s = 120\n[retention]\nstandard_days = 180",
        "[retention] standard_days = 180: Input should be greater than or equal to 365"),
    "dock address a name": (
        "reminder_interval_s = 120", 'reminder_interval_s = 120\n[dock]\naddress = "dock.local"',
        "[dock] address = 'dock.local': not an IP address"),
    "dock address every interface": (
        "reminder_interval_s = 120", 'reminder_interval_s = 120\n[dock]\naddress = "0.0.0.0"',
        "[dock] address = '0.0.0.0': would serve every interface"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_config_is_refused_with_key_value_and_file(write_config, name: str) -> None:
    old, new, message = BAD[name]
    path = edit(write_config(), old, new)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"config error in {path}" in str(caught.value)
    assert message in str(caught.value)


def test_unwritable_store_is_refused(write_config, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    path = write_config(store=blocker / "store")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"config error in {path}: [store] path = '{blocker / 'store'}': not writable" \
        in str(caught.value)


def test_cli_refuses_a_bad_config_with_exit_2(write_config) -> None:
    path = edit(write_config(), "segment_seconds = 1.0", "segment_seconds = -1.0")
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"config error in {path}: [recorder] segment_seconds = -1.0" in result.stderr
