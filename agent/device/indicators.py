"""What the LEDs say, in the colours of GA/T 947: green, the device has power; yellow, sound
is being recorded; red, video is being recorded.

A recording the officer wants and a fault prevents (interrupted) flickers the LEDs of what it
would record; a fault in standby flickers red (recording video is not possible); the green
LED blinks while the battery is low. Other health problems are told by the buzzer and the
voice (cues.py), never by a colour that means something else.
"""

from __future__ import annotations

from agent.device.state import Mode, State
from hal.gpio import Light, Lights


def lights(state: State, mode: Mode | None, with_sound: bool, low_battery: bool,
           fault: bool) -> Lights:
    """The LEDs for the machine's state and mode; `with_sound` when video recordings carry
    the microphone's sound too."""
    green = Light.BLINK if low_battery else Light.ON
    if mode is None:  # standby (or shutting down)
        return Lights(red=Light.FLICKER if fault else Light.OFF, yellow=Light.OFF, green=green)
    active = Light.ON if state is State.RECORDING else Light.FLICKER
    video = mode is Mode.VIDEO
    sound = mode is Mode.AUDIO or with_sound
    return Lights(red=active if video else Light.OFF, yellow=active if sound else Light.OFF,
                  green=green)
