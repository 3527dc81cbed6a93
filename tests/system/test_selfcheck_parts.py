"""`bodycam selfcheck` says honestly which parts a device lacks, and never crashes on it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from agent.config import default_config_path
from tests.support.device import BODYCAM

# The audio tests point PortAudio at a private PulseAudio; a device without one must not.
AUDIO_ENV = ("PULSE_SERVER", "ALSA_CONFIG_PATH")


def selfcheck(config: Path, store: Path) -> tuple[int, dict[str, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if k not in AUDIO_ENV}
    env["LG_WD"] = str(store.parent)  # lgpio's FIFOs beside the store, not in the checkout
    result = subprocess.run([*BODYCAM, "selfcheck", "--json", "--config", str(config),
                             "--store", str(store)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert "Traceback" not in result.stdout, result.stdout
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    return result.returncode, items


def test_the_simulated_device_has_every_part(tmp_path: Path) -> None:
    code, items = selfcheck(default_config_path("sim.toml"), tmp_path / "store")
    assert code == 0, items
    assert items["location"]["value"].startswith("3D fix from sim")
    assert all(not item["value"].startswith("absent") for item in items.values())


def test_the_pi_config_on_this_machine_names_every_absent_part(tmp_path: Path) -> None:
    """config/default.toml as shipped: no picamera2, sound card, Pi (lgpio imports, gpiozero
    finds no board), battery or gpsd."""
    code, items = selfcheck(default_config_path("default.toml"), tmp_path / "store")
    assert code == 2
    expected = {"camera": ("fail", "picamera2"), "microphone": ("fail", "[audio] input_device"),
                "speaker": ("fail", "[audio] output_device"),
                "button and LEDs": ("fail", "unable to locate Pi revision"),
                "battery": ("warn", "/sys/class/power_supply")}
    for name, (status, reason) in expected.items():
        item = items[name]
        assert item["status"] == status and item["value"].startswith("absent: "), item
        assert reason in item["value"], item
    location = items["location"]
    assert location["status"] == "warn" and location["value"].startswith(
        "no fix: gpsd:127.0.0.1:2947"), location
    # What is there is still checked: the store, the key, the chain.
    for name in ("storage", "store writable", "device key", "chain tail"):
        assert items[name]["status"] == "pass", items[name]
