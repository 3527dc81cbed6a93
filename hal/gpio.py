"""The officer's controls: the buttons (record, audio, photo, function) and LEDs, via gpiozero.

The simulated device uses gpiozero's own MockFactory pins (the library's test
facility), so the same Button and LED objects run here and on a Raspberry Pi.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from gpiozero import LED, Button, Buzzer
from gpiozero.pins import Factory

from agent.config import GpioConfig


class Health(enum.Enum):
    OK = "ok"
    WARNING = "warning"
    FAULT = "fault"


class Light(enum.Enum):
    OFF = "off"
    ON = "on"
    BLINK = "blink"      # slow: an alarm on a steady meaning (the green LED on low battery)
    FLICKER = "flicker"  # fast: wanted and not happening (a recording a fault prevents)


_BLINKS = {Light.BLINK: (0.5, 0.5), Light.FLICKER: (0.1, 0.1)}


@dataclass(frozen=True)
class Lights:
    """What each LED shows; agent/device/indicators.py decides it (GA/T 947 colours)."""

    red: Light = Light.OFF
    yellow: Light = Light.OFF
    green: Light = Light.ON


_FACTORIES = {
    "mock": ("gpiozero.pins.mock", "MockFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
}


def pin_factory(name: str) -> Factory:
    """The named pin factory. lgpio's import makes its notification FIFOs in $LG_WD (else the
    working directory); where that is not writable the import fails with a bare file name, so
    the reason says where it tried."""
    module, cls = _FACTORIES[name]
    try:
        factory: type[Factory] = getattr(import_module(module), cls)
    except OSError as exc:
        if name != "lgpio":
            raise
        folder = os.environ.get("LG_WD") or os.getcwd()
        raise RuntimeError(f"lgpio could not make its notification FIFO in {folder} "
                           f"($LG_WD, else the working directory, must be writable): "
                           f"{exc}") from exc
    return factory()


@dataclass(frozen=True)
class Gestures:
    """Where each button's gestures go. The record button: `press(gesture)` at once on
    press-down, `tap(gesture)` on a release before the hold, `hold(gesture)` when the same
    press is held past `stop_hold_seconds`; the audio button (if `audio_pin`): `audio_press`
    and `audio_hold` alike; the function button: `function_press()`, `function_hold()` past
    `exemption_hold_seconds`; the PHOTO button (if `photo_pin`): `photo_press()`."""

    press: Callable[[int], None]
    tap: Callable[[int], None]
    hold: Callable[[int], None]
    audio_press: Callable[[int], None]
    audio_hold: Callable[[int], None]
    function_press: Callable[[], None]
    function_hold: Callable[[], None]
    photo_press: Callable[[], None] | None = None


class OfficerControls:
    """Reports the officer's gestures (`Gestures`) and drives the LEDs and the buzzer.

    The gesture number, one count for the record and audio buttons, lets the state machine
    tell the hold of the press that started a recording from a later, deliberate hold, and
    the release of the starting press from a later short press. The buttons are debounced
    (`button_bounce_s`): a bouncing contact would otherwise make one press several, and
    the hold of the starting press would then belong to a later one and stop the recording.
    """

    def __init__(self, config: GpioConfig, gestures: Gestures) -> None:
        self._config = config
        self.factory = pin_factory(config.pin_factory)
        self._gestures = itertools.count(1)
        self._gesture = 0
        self._held = 0  # the last gesture held: its release is no short press
        bounce = config.button_bounce_s or None
        self.button = Button(config.button_pin, pull_up=config.button_pull_up,
                             bounce_time=bounce, hold_time=config.stop_hold_seconds,
                             pin_factory=self.factory)
        self.record_led = LED(config.record_led_pin, pin_factory=self.factory)
        self.audio_led = LED(config.audio_led_pin, pin_factory=self.factory)
        self.status_led = LED(config.status_led_pin, pin_factory=self.factory)
        self.buzzer = Buzzer(config.buzzer_pin, pin_factory=self.factory)
        self.function_button = Button(config.function_button_pin,
                                      pull_up=config.button_pull_up, bounce_time=bounce,
                                      hold_time=config.exemption_hold_seconds,
                                      pin_factory=self.factory)
        self.audio_button: Button | None = None
        if config.audio_pin is not None:
            self.audio_button = Button(config.audio_pin, pull_up=config.button_pull_up,
                                       bounce_time=bounce, hold_time=config.stop_hold_seconds,
                                       pin_factory=self.factory)
            self.audio_button.when_pressed = lambda: gestures.audio_press(self._next_gesture())
            self.audio_button.when_held = lambda: gestures.audio_hold(self._hold())
        self.photo_button: Button | None = None
        if config.photo_pin is not None:
            self.photo_button = Button(config.photo_pin, pull_up=config.button_pull_up,
                                       bounce_time=bounce, pin_factory=self.factory)
            self.photo_button.when_pressed = gestures.photo_press
        self.button.when_pressed = lambda: gestures.press(self._next_gesture())
        self.button.when_held = lambda: gestures.hold(self._hold())
        self.button.when_released = lambda: self._released(gestures.tap)
        self.function_button.when_pressed = gestures.function_press
        self.function_button.when_held = gestures.function_hold

    def _next_gesture(self) -> int:
        self._gesture = next(self._gestures)
        return self._gesture

    def _hold(self) -> int:
        self._held = self._gesture
        return self._gesture

    def _released(self, tap: Callable[[int], None]) -> None:
        if self._held != self._gesture:
            tap(self._gesture)

    def show(self, lights: Lights) -> None:
        """Drive each LED as `lights` says."""
        for led, light in ((self.record_led, lights.red), (self.audio_led, lights.yellow),
                           (self.status_led, lights.green)):
            if light is Light.ON:
                led.on()
            elif light is Light.OFF:
                led.off()
            else:
                on, off = _BLINKS[light]
                led.blink(on_time=on, off_time=off)

    def pulse(self, times: int = 1) -> None:
        """Buzz (or vibrate) `times` short pulses, in the background."""
        self.buzzer.beep(on_time=0.15, off_time=0.15, n=times, background=True)

    @property
    def simulated(self) -> bool:
        return self._config.pin_factory == "mock"

    def press(self, long: bool = False, function: bool = False, audio: bool = False) -> None:
        """Press a simulated button (a MockFactory pin): the record button, or the function
        button if `function`, or the audio button if `audio`; held past its hold gesture if
        `long`."""
        if not self.simulated:
            raise RuntimeError("the buttons can only be pressed from software on the "
                               "simulated device (pin_factory = \"mock\")")
        if audio and self.audio_button is None:
            raise RuntimeError("no audio button: [gpio] audio_pin is not set")
        button, number = ((self.function_button, self._config.function_button_pin) if function
                          else (self.audio_button, self._config.audio_pin) if audio
                          else (self.button, self._config.button_pin))
        assert button is not None and number is not None
        pin = self.factory.pin(number)
        pressed, released = ((pin.drive_low, pin.drive_high) if self._config.button_pull_up
                             else (pin.drive_high, pin.drive_low))
        pressed()
        if long:
            deadline = time.monotonic() + button.hold_time + 2.0
            while not button.is_held and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            time.sleep(0.05)
        released()

    def close(self) -> None:
        for device in (self.button, self.function_button, self.audio_button, self.photo_button,
                       self.record_led, self.audio_led, self.status_led, self.buzzer):
            if device is not None:
                device.close()
        self.factory.close()


class _Released:
    is_pressed = False


class AbsentControls:
    """No button, LED or buzzer: the device is driven by triggers and the control socket."""

    simulated = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.button = self.function_button = _Released()

    def show(self, lights: Lights) -> None:
        pass

    def pulse(self, times: int = 1) -> None:
        pass

    def press(self, long: bool = False, function: bool = False, audio: bool = False) -> None:
        raise RuntimeError(f"no buttons: {self.reason}")

    def close(self) -> None:
        pass
