"""gpiozero devices on MockFactory with the production pins of config/default.toml, and the
external trigger inputs that can start, never stop, a recording."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPin
from gpiozero.pins.pi import PiPin

from agent.config import Config, ConfigError, default_config_path, load_config
from agent.device.state import (
    AudioHeld,
    AudioPressed,
    ButtonHeld,
    ButtonPressed,
    ButtonTapped,
    Event,
    Mode,
    State,
    StateMachine,
)
from agent.evidence.chain import read_bodies
from hal.gpio import Gestures, Light, Lights, OfficerControls
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
    controls = OfficerControls(config, Gestures(
        press=presses.append, tap=lambda g: None, hold=lambda g: None,
        audio_press=lambda g: None, audio_hold=lambda g: None,
        function_press=lambda: None, function_hold=lambda: None))
    try:
        drive(controls.factory, 17, True)
        drive(controls.factory, 17, False)
        wait_for(lambda: presses == [1], timeout=5, what="the press on GPIO17")
        controls.show(Lights(red=Light.ON, yellow=Light.ON, green=Light.ON))
        assert controls.factory.pin(27).state is True  # red LED solid while recording video
        assert controls.factory.pin(25).state is True  # yellow: sound is recorded with it
        assert controls.factory.pin(22).state is True  # green: power
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
    ({"# photo_pin = 16": "photo_pin = 24"}, "'photo_pin': 24"),  # the function button's
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


class LgpioDebouncedPin(MockPin):
    """A MockPin whose edge alerts keep lgpio's debounce contract, which gpiozero's
    LGPIOFactory (the Pi's) sets from `bounce_time` with lgpio.gpio_set_debounce_micros: "An
    alert will only be issued if the edge has been stable for at least debounce
    microseconds", and it is timestamped that much after the change. gpiozero 2.0's own
    MockPin stores the bounce time and ignores it, so it cannot show a debounce; without a
    bounce time this pin is MockPin, alerting at every edge."""

    def __init__(self, factory: MockFactory, info: object) -> None:
        super().__init__(factory, info)
        self._lock = threading.Lock()
        self._pending: threading.Timer | None = None
        self._reported = self._state

    def drive_high(self) -> None:
        self._drive(True)

    def drive_low(self) -> None:
        self._drive(False)

    def _drive(self, level: bool) -> None:
        if not self._bounce:
            self._reported = level
            super().drive_high() if level else super().drive_low()
            return
        with self._lock:
            if not self._change_state(level):
                return
            if self._pending is not None:
                self._pending.cancel()
            self._pending = threading.Timer(self._bounce, self._alert, args=(level,))
            self._pending.start()

    def _alert(self, level: bool) -> None:
        with self._lock:
            if self._state != level or self._reported == level:
                return
            self._reported = level
        if self._edges in ("both", "rising" if level else "falling") and self._when_changed:
            PiPin._call_when_changed(self, self._factory.ticks(), level)


class Recorded:
    """The state machine's actions, as far as the button decides them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start_recording(self, trigger: str, mode: Mode) -> None:
        self.calls.append(f"start:{trigger}:{mode.value}")

    def mark(self, source: str) -> None:
        self.calls.append(f"mark:{source}")

    def stop_recording(self, reason: str) -> None:
        self.calls.append(f"stop:{reason}")

    def interrupted(self, cause: str, detail: str) -> None: ...

    def interruption_ended(self, reason: str) -> None: ...

    def explain(self) -> None: ...

    def declare_exemption(self) -> None: ...

    def show(self, state: State, mode: Mode | None) -> None: ...


def wired(config, handle) -> OfficerControls:
    """The controls on `config`'s pins, every gesture to the state machine through `handle`."""
    return OfficerControls(config, Gestures(
        press=lambda g: handle(ButtonPressed(g)), tap=lambda g: handle(ButtonTapped(g)),
        hold=lambda g: handle(ButtonHeld(g)), audio_press=lambda g: handle(AudioPressed(g)),
        audio_hold=lambda g: handle(AudioHeld(g)), function_press=lambda: None,
        function_hold=lambda: None))


def chatter(pin: MockPin, closing: bool) -> None:
    """A contact closing (or opening) as a real one does: four short bounces within about
    4 ms before it settles at its new level (behind the pull-up, closed is low)."""
    settle, away = (pin.drive_low, pin.drive_high) if closing else (pin.drive_high,
                                                                   pin.drive_low)
    for _ in range(4):
        settle()
        time.sleep(0.0005)
        away()
        time.sleep(0.0005)
    settle()


def test_a_bouncing_press_starts_a_recording_and_its_hold_does_not_stop_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = production_config(tmp_path, **{"stop_hold_seconds = 3.0":
                                            "stop_hold_seconds = 0.5"}).gpio
    assert config.button_bounce_s == 0.03
    monkeypatch.setattr("hal.gpio.pin_factory",
                        lambda _name: MockFactory(pin_class=LgpioDebouncedPin))
    actions = Recorded()
    machine = StateMachine(actions)
    lock = threading.Lock()

    def handle(event: Event) -> None:
        with lock:
            machine.handle(event)

    controls = wired(config, handle)
    button = controls.factory.pin(config.button_pin)
    try:
        # The officer presses to start and, as people do, keeps the button down a while.
        chatter(button, closing=True)
        time.sleep(config.stop_hold_seconds + 0.4)
        chatter(button, closing=False)
        time.sleep(0.2)
        assert actions.calls == ["start:button:video"], "one press, and its hold stops nothing"
        assert machine.state is State.RECORDING

        # A later, deliberate hold stops it; the bouncing release does not start another.
        chatter(button, closing=True)
        wait_for(lambda: machine.state is State.STANDBY, timeout=3, what="the stop")
        chatter(button, closing=False)
        time.sleep(0.2)
        assert actions.calls == ["start:button:video", "stop:button_hold"]
        assert machine.state is State.STANDBY
    finally:
        controls.close()


def test_a_short_press_is_a_tap_and_a_held_one_is_not(tmp_path: Path) -> None:
    """The record button's release says "short press" (a mark while recording) only when
    the press was not held: the hold that stops a recording must not also mark it."""
    config = production_config(tmp_path, **{"stop_hold_seconds = 3.0":
                                            "stop_hold_seconds = 0.5"}).gpio
    seen: list[str] = []
    controls = OfficerControls(config, Gestures(
        press=lambda g: seen.append(f"press {g}"), tap=lambda g: seen.append(f"tap {g}"),
        hold=lambda g: seen.append(f"hold {g}"), audio_press=lambda g: None,
        audio_hold=lambda g: None, function_press=lambda: None, function_hold=lambda: None))
    try:
        controls.press()
        wait_for(lambda: seen == ["press 1", "tap 1"], timeout=2, what="a short press")
        controls.press(long=True)
        time.sleep(0.2)
        assert seen == ["press 1", "tap 1", "press 2", "hold 2"]
    finally:
        controls.close()
