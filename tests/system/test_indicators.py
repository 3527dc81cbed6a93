"""The LEDs on MockFactory pins in the GA/T 947 colours: green power (blinking on low
battery), yellow sound being recorded, red video being recorded; a recording a fault
prevents flickers the LEDs of what it would record."""

from __future__ import annotations

import time
from pathlib import Path

from agent.device.state import Fault, FaultCleared, State
from tests.support.device import running_daemon, wait_for


def seen(pin, seconds: float = 0.6) -> str:
    """What an LED did over `seconds`: "on", "off" or "blinking"."""
    states = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states.add(pin.state)
        time.sleep(0.01)
    return "blinking" if len(states) > 1 else "on" if states == {True} else "off"


def test_the_leds_say_what_is_recorded(write_config, tmp_path: Path) -> None:
    battery = tmp_path / "store" / "sim" / "power_supply" / "BAT0"
    with running_daemon(write_config(check_interval=0.2)) as daemon:
        gpio, factory = daemon.config.gpio, daemon.controls.factory
        red, yellow, green = (factory.pin(gpio.record_led_pin), factory.pin(gpio.audio_led_pin),
                              factory.pin(gpio.status_led_pin))

        def leds() -> tuple[str, str, str]:
            return seen(red), seen(yellow), seen(green)

        assert leds() == ("off", "off", "on"), "standby: power only"

        daemon.controls.press(audio=True)
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="audio recording")
        assert leds() == ("off", "on", "on"), "sound only: yellow, no red"
        daemon.controls.press(long=True, audio=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")

        daemon.controls.press()
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="video recording")
        assert leds() == ("on", "on", "on"), "video with its sound: red and yellow"

        daemon.post(Fault("overheated", "86 C"))
        wait_for(lambda: daemon.machine.state is State.INTERRUPTED, what="interrupted")
        assert leds() == ("blinking", "blinking", "on"), "wanted, not recorded: they flicker"
        daemon.post(FaultCleared("overheated"))
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="resumed")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")

        (battery / "time_to_empty_now").write_text(f"{19 * 60}\n")  # under low_minutes (20)
        wait_for(lambda: "battery_low" in daemon.cues.active, timeout=5, what="the alarm")
        wait_for(lambda: seen(green) == "blinking", timeout=3, what="green blinking")
        assert (seen(red), seen(yellow)) == ("off", "off")
