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
    INTERRUPTED = "interrupted"  # the officer wants a recording; a fault prevents it
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True)
class ButtonPressed:
    gesture: int


@dataclass(frozen=True)
class ButtonHeld:
    gesture: int


@dataclass(frozen=True)
class FunctionPressed:
    """The function button: explain an interruption now."""


@dataclass(frozen=True)
class FunctionHeld:
    """The function button held: declare an exemption (Art. 7)."""


@dataclass(frozen=True)
class PhotoPressed:
    """The PHOTO button or the control socket's `photo`: take a still (`source` says which)."""

    source: str


@dataclass(frozen=True)
class TriggerStart:
    """An external trigger (holster sensor, vehicle signal, control socket): it can only start."""

    source: str


@dataclass(frozen=True)
class Fault:
    """Something that makes recording impossible or unsafe: a full disk, a dead camera,
    an empty battery, heat."""

    cause: str
    detail: str


@dataclass(frozen=True)
class FaultCleared:
    cause: str


@dataclass(frozen=True)
class Shutdown:
    """`restart`: the daemon ends itself for systemd to start it again (a camera that only
    a new process can reopen); an interruption under way is left open for the next start
    to seal when it resumes the recording."""

    reason: str
    restart: bool = False


@dataclass(frozen=True)
class HealthChanged:
    """A self-check or an alarm changed how the device should look."""


Event = (ButtonPressed | ButtonHeld | FunctionPressed | FunctionHeld | TriggerStart | Fault
         | FaultCleared | Shutdown | HealthChanged | PhotoPressed)


class Actions(Protocol):
    def start_recording(self, trigger: str) -> None: ...

    def stop_recording(self, reason: str) -> None: ...

    def interrupted(self, cause: str, detail: str) -> None: ...

    def interruption_ended(self, reason: str) -> None: ...

    def explain(self) -> None: ...

    def declare_exemption(self) -> None: ...

    def take_photo(self, source: str) -> None: ...

    def refuse_photo(self, why: str) -> None: ...

    def show(self, state: State) -> None: ...


class StateMachine:
    """Press starts; holding a later press stops; triggers only start; a fault interrupts
    a recording, which resumes by itself once every fault has cleared; shutdown seals."""

    def __init__(self, actions: Actions) -> None:
        self._actions = actions
        self.state = State.STANDBY
        self.faults: dict[str, str] = {}
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
            case ButtonHeld(_) if self.state is State.INTERRUPTED:
                self._actions.interruption_ended("button_hold")
                self._enter(State.STANDBY)
            case Fault(cause, detail):
                self._fault(cause, detail)
            case FaultCleared(cause):
                self.faults.pop(cause, None)
                if self.state is State.INTERRUPTED and not self.faults:
                    self._start(f"resume_after_{cause}")
            case FunctionPressed():
                self._actions.explain()
            case FunctionHeld() if self.state is State.STANDBY:
                self._actions.declare_exemption()
            case PhotoPressed(_) if self.faults:
                # What stops a recording (a full disk, a dead camera, heat) stops a photo.
                self._actions.refuse_photo(", ".join(self.faults))
            case PhotoPressed(source) if self.state in (State.STANDBY, State.RECORDING):
                self._actions.take_photo(source)
            case HealthChanged():
                self._actions.show(self.state)
            case Shutdown(reason, restart):
                if self.state is State.RECORDING:
                    self._actions.stop_recording(reason)
                elif self.state is State.INTERRUPTED and not restart:
                    self._actions.interruption_ended(reason)
                self._enter(State.SHUTTING_DOWN)
            case _:
                log.debug("%s ignored in %s", event, self.state.value)

    def _start(self, trigger: str) -> None:
        if self.faults:
            # Nothing can be recorded now: wait, as interrupted, for the fault to clear.
            cause, detail = next(iter(self.faults.items()))
            self._actions.interrupted(cause, f"{trigger} while {detail}")
            self._enter(State.INTERRUPTED)
            return
        self._actions.start_recording(trigger)
        self._enter(State.RECORDING)

    def _fault(self, cause: str, detail: str) -> None:
        if cause in self.faults:
            return
        self.faults[cause] = detail
        if self.state is State.RECORDING:
            self._actions.stop_recording(cause)
            self._actions.interrupted(cause, detail)
            self._enter(State.INTERRUPTED)

    def _enter(self, state: State) -> None:
        self.state = state
        self._actions.show(state)
