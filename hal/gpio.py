"""The officer's controls: the record button and the LEDs, through gpiozero.

The simulated device uses gpiozero's own MockFactory pins (the library's test
facility), so the same Button and LED objects run here and on a Raspberry Pi.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Callable
from importlib import import_module

from gpiozero import LED, Button, Buzzer
from gpiozero.pins import Factory

from agent.config import GpioConfig


class Health(enum.Enum):
    OK = "ok"
    WARNING = "warning"
    FAULT = "fault"


_GREEN = {Health.OK: (0.1, 1.9), Health.WARNING: (0.25, 0.25), Health.FAULT: (0.05, 0.1)}

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


class OfficerControls:
    """Reports gestures on the record button: `on_press(gesture)` at once on press-down,
    `on_hold(gesture)` when the same press is held past `stop_hold_seconds`; on the
    function button: `on_function_press()`, `on_function_hold()` past
    `exemption_hold_seconds`; and on the PHOTO button, when `photo_pin` is set,
    `on_photo_press()`.

    The gesture number lets the state machine tell the hold of the press that
    started a recording from a later, deliberate hold. Both buttons are debounced
    (`button_bounce_s`): a bouncing contact would otherwise make one press several, and
    the hold of the starting press would then belong to a later one and stop the recording.
    """

    def __init__(self, config: GpioConfig, on_press: Callable[[int], None],
                 on_hold: Callable[[int], None], on_function_press: Callable[[], None],
                 on_function_hold: Callable[[], None],
                 on_photo_press: Callable[[], None] | None = None) -> None:
        self._config = config
        self.factory = pin_factory(config.pin_factory)
        self._gestures = itertools.count(1)
        self._gesture = 0
        bounce = config.button_bounce_s or None
        self.button = Button(config.button_pin, pull_up=config.button_pull_up,
                             bounce_time=bounce, hold_time=config.stop_hold_seconds,
                             pin_factory=self.factory)
        self.record_led = LED(config.record_led_pin, pin_factory=self.factory)
        self.status_led = LED(config.status_led_pin, pin_factory=self.factory)
        self.buzzer = Buzzer(config.buzzer_pin, pin_factory=self.factory)
        self.function_button = Button(config.function_button_pin,
                                      pull_up=config.button_pull_up, bounce_time=bounce,
                                      hold_time=config.exemption_hold_seconds,
                                      pin_factory=self.factory)
        self.button.when_pressed = lambda: on_press(self._next_gesture())
        self.button.when_held = lambda: on_hold(self._gesture)
        self.function_button.when_pressed = on_function_press
        self.function_button.when_held = on_function_hold
        self.photo_button = (Button(config.photo_pin, pull_up=config.button_pull_up,
                                    bounce_time=bounce, pin_factory=self.factory)
                             if config.photo_pin is not None else None)
        if self.photo_button is not None:
            self.photo_button.when_pressed = on_photo_press

    def _next_gesture(self) -> int:
        self._gesture = next(self._gestures)
        return self._gesture

    def show(self, recording: bool, health: Health) -> None:
        """The LED pattern for what the device does and how well it is.

        Red is solid while recording and nothing else may look like it; green says
        how healthy the device is: a heartbeat when all is well, a steady flash on a
        warning, a fast flicker on a fault. A fault in standby also flickers red.
        """
        if recording:
            self.record_led.on()
        elif health is Health.FAULT:
            self.record_led.blink(on_time=0.1, off_time=0.1)
        else:
            self.record_led.off()
        on, off = _GREEN[health]
        self.status_led.blink(on_time=on, off_time=off)

    def pulse(self, times: int = 1) -> None:
        """Buzz (or vibrate) `times` short pulses, in the background."""
        self.buzzer.beep(on_time=0.15, off_time=0.15, n=times, background=True)

    @property
    def simulated(self) -> bool:
        return self._config.pin_factory == "mock"

    def press(self, long: bool = False, function: bool = False) -> None:
        """Press a simulated button (a MockFactory pin): the record button, or the function
        button if `function`; held past its hold gesture if `long`."""
        if not self.simulated:
            raise RuntimeError("the buttons can only be pressed from software on the "
                               "simulated device (pin_factory = \"mock\")")
        button = self.function_button if function else self.button
        pin = self.factory.pin(self._config.function_button_pin if function
                               else self._config.button_pin)
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
        for device in (self.button, self.function_button, self.record_led, self.status_led,
                       self.buzzer, self.photo_button):
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

    def show(self, recording: bool, health: object) -> None:
        pass

    def pulse(self, times: int = 1) -> None:
        pass

    def press(self, long: bool = False, function: bool = False) -> None:
        raise RuntimeError(f"no buttons: {self.reason}")

    def close(self) -> None:
        pass
