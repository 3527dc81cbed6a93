"""gpiozero devices on MockFactory with the production pins of config/default.toml, and the
external trigger inputs that can start, never stop, a recording."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config import Config, ConfigError, default_config_path, load_config
from agent.device.state import State
from agent.evidence.chain import read_bodies
from hal.gpio import Health, OfficerControls
from hal.triggers import TriggerInputs
from tests.support.device import running_daemon, wait_for, write_device_config

ROOT = Path(__file__).resolve().parents[2]


def production_config(tmp_path: Path, **replace: str) -> Config:
    """config/default.toml as shipped, but on MockFactory pins and with a store in tmp_path."""
    text = default_config_path("default.toml").read_text()
    text = text.replace('pin_factory = "lgpio"', 'pin_factory = "mock"')
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "default.toml"
    path.write_text(text)
    config, _ = load_config(path, store=tmp_path / "store")
    return config


def drive(factory, pin: int, active: bool) -> None:
    """A switch closing to ground (active) or opening (inactive) behind the pull-up."""
    mock = factory.pin(pin)
    (mock.drive_low if active else mock.drive_high)()


def test_the_officer_controls_on_the_production_pins(tmp_path: Path) -> None:
    config = production_config(tmp_path).gpio
    assert (config.button_pin, config.record_led_pin, config.status_led_pin,
            config.buzzer_pin, config.function_button_pin) == (17, 27, 22, 23, 24)
    presses: list[int] = []
    controls = OfficerControls(config, on_press=presses.append, on_hold=lambda g: None,
                               on_function_press=lambda: None, on_function_hold=lambda: None)
    try:
        drive(controls.factory, 17, True)
        drive(controls.factory, 17, False)
        wait_for(lambda: presses == [1], timeout=5, what="the press on GPIO17")
        controls.show(recording=True, health=Health.OK)
        assert controls.factory.pin(27).state is True  # red LED solid while recording
        controls.pulse(1)
        wait_for(lambda: controls.factory.pin(23).state is True, timeout=2, what="the buzzer")
    finally:
        controls.close()


def test_trigger_inputs_fire_on_the_production_pins(tmp_path: Path) -> None:
    config = production_config(tmp_path).gpio
    assert config.trigger_pins == {"holster": 5, "vehicle": 6}
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    fired: list[str] = []
    inputs = TriggerInputs(config, factory, fired.append)
    try:
        drive(factory, 6, True)
        wait_for(lambda: fired == ["vehicle"], timeout=5, what="the vehicle trigger")
        drive(factory, 5, True)
        wait_for(lambda: fired == ["vehicle", "holster"], timeout=5, what="the holster trigger")
        drive(factory, 5, False)
        time.sleep(0.1)
        assert fired == ["vehicle", "holster"], "releasing a trigger does nothing"
    finally:
        inputs.close()
        factory.close()


@pytest.mark.system
def test_a_trigger_starts_a_recording_and_cannot_stop_it(tmp_path: Path) -> None:
    path = write_device_config(tmp_path / "device.toml", tmp_path / "store")
    path.write_text(path.read_text().replace(
        "stop_hold_seconds = 0.5\n", "stop_hold_seconds = 0.5\ntrigger_pins = { holster = 5 }\n"))
    with running_daemon(path) as daemon:
        factory = daemon.controls.factory
        drive(factory, 5, True)
        wait_for(lambda: daemon.machine.state is State.RECORDING, timeout=10,
                 what="recording started by the holster")
        drive(factory, 5, False)
        drive(factory, 5, True)
        time.sleep(0.3)
        assert daemon.machine.state is State.RECORDING
    starts = [b["payload"]["trigger"] for b in read_bodies(tmp_path / "store" / "chain.jsonl")
              if b["type"] == "record_start"]
    assert starts == ["external:holster"]


@pytest.mark.parametrize(("replace", "message"), [
    ({"holster = 5": "holster = 17"}, "pins must be distinct"),
    ({"holster = 5": "\"Holster!!\" = 5"}, "[gpio.trigger_pins.Holster!!]"),
])
def test_bad_trigger_pins_are_named(tmp_path: Path, replace: dict[str, str],
                                    message: str) -> None:
    with pytest.raises(ConfigError) as error:
        production_config(tmp_path, **replace)
    assert "default.toml" in str(error.value) and message in str(error.value)


def test_an_unwritable_lgpio_folder_is_named_in_the_reason(tmp_path: Path) -> None:
    """The real lgpio, imported where it cannot make its FIFO (a fresh process: a failed
    import leaves lgpio's C half loaded): the reason names the folder, not '.lgd-nfy-3'."""
    missing = tmp_path / "no-such-folder"
    probe = ("from hal.gpio import pin_factory\n"
             "try:\n    pin_factory('lgpio')\n"
             "except Exception as exc:\n    print(f'{type(exc).__name__}: {exc}')\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={**os.environ, "LG_WD": str(missing),
                                                         "PYTHONPATH": str(ROOT)})
    assert done.stdout.startswith(
        f"RuntimeError: lgpio could not make its notification FIFO in {missing} "), done
