"""The one place that decides: hardware and control events in, recorder actions out."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class State(enum.Enum):
    STANDBY = "standby"
    RECORDING = "recording"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True)
class ButtonPressed:
    gesture: int


@dataclass(frozen=True)
class ButtonHeld:
    gesture: int


@dataclass(frozen=True)
class TriggerStart:
    """An external trigger (holster sensor, vehicle signal, control socket): it can only start."""

    source: str


@dataclass(frozen=True)
class Shutdown:
    reason: str


@dataclass(frozen=True)
class HealthChanged:
    """A self-check or an alarm changed how the device should look."""


Event = ButtonPressed | ButtonHeld | TriggerStart | Shutdown | HealthChanged


class Actions(Protocol):
    def start_recording(self, trigger: str) -> None: ...

    def stop_recording(self, reason: str) -> None: ...

    def show(self, state: State) -> None: ...


class StateMachine:
    """Press starts; holding a later press stops; triggers only start; shutdown seals and ends."""

    def __init__(self, actions: Actions) -> None:
        self._actions = actions
        self.state = State.STANDBY
        self._starting_gesture: int | None = None
        actions.show(self.state)

    def handle(self, event: Event) -> None:
        if self.state is State.SHUTTING_DOWN:
            return
        match event:
            case ButtonPressed(gesture) if self.state is State.STANDBY:
                self._starting_gesture = gesture
                self._start("button")
            case TriggerStart(source) if self.state is State.STANDBY:
                self._starting_gesture = None
                self._start(source)
            case ButtonHeld(gesture) if (self.state is State.RECORDING
                                         and gesture != self._starting_gesture):
                self._actions.stop_recording("button_hold")
                self._enter(State.STANDBY)
            case HealthChanged():
                self._actions.show(self.state)
            case Shutdown(reason):
                if self.state is State.RECORDING:
                    self._actions.stop_recording(reason)
                self._enter(State.SHUTTING_DOWN)
            case _:
                log.debug("%s ignored in %s", event, self.state.value)

    def _start(self, trigger: str) -> None:
        self._actions.start_recording(trigger)
        self._enter(State.RECORDING)

    def _enter(self, state: State) -> None:
        self.state = state
        self._actions.show(state)
