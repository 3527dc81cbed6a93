"""External trigger inputs: a holster sensor, a vehicle's light-bar signal, through gpiozero.

A trigger can only start a recording, never stop one (the officer ends an incident).
Each configured input is a gpiozero DigitalInputDevice on the controls' pin factory,
active low behind the pull-up by default (a switch closing to ground), debounced. Only
the edge into active fires: a signal that stays on starts one recording, and after
the officer ends it, the next edge starts the next.
"""

from __future__ import annotations

from collections.abc import Callable

from gpiozero import DigitalInputDevice
from gpiozero.pins import Factory

from agent.config import GpioConfig


class TriggerInputs:
    def __init__(self, config: GpioConfig, factory: Factory,
                 on_trigger: Callable[[str], None]) -> None:
        self.inputs: dict[str, DigitalInputDevice] = {}
        bounce = config.trigger_bounce_s or None
        for name, pin in config.trigger_pins.items():
            device = DigitalInputDevice(pin, pull_up=config.trigger_pull_up, bounce_time=bounce,
                                        pin_factory=factory)
            device.when_activated = lambda _device, name=name: on_trigger(name)
            self.inputs[name] = device

    def close(self) -> None:
        for device in self.inputs.values():
            device.close()
