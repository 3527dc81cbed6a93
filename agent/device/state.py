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


class Mode(enum.Enum):
    """What a recording records (record_start.payload.mode): video with its sound, or sound
    only."""

    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True)
class ButtonPressed:
    """The record button pressed down."""

    gesture: int


@dataclass(frozen=True)
class ButtonTapped:
    """The record button released before its hold: a short press (an important mark)."""

    gesture: int


@dataclass(frozen=True)
class ButtonHeld:
    gesture: int


@dataclass(frozen=True)
class AudioPressed:
    """The audio button pressed down: an audio-only recording."""

    gesture: int


@dataclass(frozen=True)
class AudioHeld:
    gesture: int


@dataclass(frozen=True)
class MarkAsked:
    """An important mark asked for by another way than the button (the control socket)."""

    source: str


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
    mode: Mode = Mode.VIDEO  # a recording resumed after a power cut keeps its own


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


Event = (ButtonPressed | ButtonTapped | ButtonHeld | AudioPressed | AudioHeld | MarkAsked
         | FunctionPressed | FunctionHeld | PhotoPressed | TriggerStart | Fault | FaultCleared
         | Shutdown | HealthChanged)


class Actions(Protocol):
    def start_recording(self, trigger: str, mode: Mode) -> None: ...

    def mark(self, source: str) -> None: ...

    def stop_recording(self, reason: str) -> None: ...

    def interrupted(self, cause: str, detail: str) -> None: ...

    def interruption_ended(self, reason: str) -> None: ...

    def explain(self) -> None: ...

    def declare_exemption(self) -> None: ...

    def take_photo(self, source: str) -> None: ...

    def refuse_photo(self, why: str) -> None: ...

    def show(self, state: State, mode: Mode | None) -> None: ...


class StateMachine:
    """Press starts (the record button video, the audio button sound only); a short press of
    the record button while recording marks it; holding a later press stops (the audio
    button stops only sound-only recordings); triggers only start; a fault interrupts a
    recording, which resumes by itself, in its mode, once every fault has cleared; shutdown
    seals."""

    def __init__(self, actions: Actions) -> None:
        self._actions = actions
        self.state = State.STANDBY
        self.mode: Mode | None = None  # of the recording wanted, recording or interrupted
        self.faults: dict[str, str] = {}
        self._starting_gesture: int | None = None
        actions.show(self.state, self.mode)

    def handle(self, event: Event) -> None:
        if self.state is State.SHUTTING_DOWN:
            return
        recording, interrupted = self.state is State.RECORDING, self.state is State.INTERRUPTED
        match event:
            case ButtonPressed(gesture) if self.state is State.STANDBY:
                self._starting_gesture = gesture
                self._start("button", Mode.VIDEO)
            case AudioPressed(gesture) if self.state is State.STANDBY:
                self._starting_gesture = gesture
                self._start("audio_button", Mode.AUDIO)
            case TriggerStart(source, mode) if self.state is State.STANDBY:
                self._starting_gesture = None
                self._start(source, mode)
            case ButtonTapped(gesture) if recording and gesture != self._starting_gesture:
                self._actions.mark("button")
            case MarkAsked(source) if recording:
                self._actions.mark(source)
            case ButtonHeld(gesture) | AudioHeld(gesture) if (
                    recording and self._stops(event) and gesture != self._starting_gesture):
                self._actions.stop_recording("button_hold")
                self._enter(State.STANDBY)
            case ButtonHeld(_) | AudioHeld(_) if interrupted and self._stops(event):
                self._actions.interruption_ended("button_hold")
                self._enter(State.STANDBY)
            case Fault(cause, detail):
                self._fault(cause, detail)
            case FaultCleared(cause):
                self.faults.pop(cause, None)
                if interrupted and not self.faults and self.mode is not None:
                    self._start(f"resume_after_{cause}", self.mode)
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
                self._actions.show(self.state, self.mode)
            case Shutdown(reason, restart):
                if self.state is State.RECORDING:
                    self._actions.stop_recording(reason)
                elif self.state is State.INTERRUPTED and not restart:
                    self._actions.interruption_ended(reason)
                self._enter(State.SHUTTING_DOWN)
            case _:
                log.debug("%s ignored in %s", event, self.state.value)

    def _stops(self, hold: ButtonHeld | AudioHeld) -> bool:
        """The record button's hold stops any recording; the audio button's only its own."""
        return isinstance(hold, ButtonHeld) or self.mode is Mode.AUDIO

    def _start(self, trigger: str, mode: Mode) -> None:
        self.mode = mode
        if self.faults:
            # Nothing can be recorded now: wait, as interrupted, for the fault to clear.
            cause, detail = next(iter(self.faults.items()))
            self._actions.interrupted(cause, f"{trigger} while {detail}")
            self._enter(State.INTERRUPTED)
            return
        self._actions.start_recording(trigger, mode)
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
        if state is not State.RECORDING and state is not State.INTERRUPTED:
            self.mode = None
        self._actions.show(state, self.mode)
