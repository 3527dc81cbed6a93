"""The state machine as a table: every state, every event, the state it goes to and the
actions it takes, in milliseconds, with a recording fake for the daemon's actions.

The table says what the machine does today; a row that changes is a behaviour change."""

from __future__ import annotations

from typing import get_args

import pytest

from agent.device.state import (
    Actions,
    AudioHeld,
    AudioPressed,
    ButtonHeld,
    ButtonPressed,
    ButtonTapped,
    Event,
    Fault,
    FaultCleared,
    FunctionHeld,
    FunctionPressed,
    HealthChanged,
    MarkAsked,
    Mode,
    PhotoPressed,
    Shutdown,
    State,
    StateMachine,
    TriggerStart,
)

Call = tuple[str, ...]


class RecordedActions:
    """Every action the machine takes, in order, as (name, *arguments)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def start_recording(self, trigger: str, mode: Mode) -> None:
        self.calls.append(("start_recording", trigger, mode.value))

    def mark(self, source: str) -> None:
        self.calls.append(("mark", source))

    def stop_recording(self, reason: str) -> None:
        self.calls.append(("stop_recording", reason))

    def interrupted(self, cause: str, detail: str) -> None:
        self.calls.append(("interrupted", cause, detail))

    def interruption_ended(self, reason: str) -> None:
        self.calls.append(("interruption_ended", reason))

    def explain(self) -> None:
        self.calls.append(("explain",))

    def declare_exemption(self) -> None:
        self.calls.append(("declare_exemption",))

    def show(self, state: State, mode: Mode | None) -> None:
        self.calls.append(("show", state.value) + ((mode.value,) if mode else ()))

    def take_photo(self, source: str) -> None:
        self.calls.append(("take_photo", source))

    def refuse_photo(self, why: str) -> None:
        self.calls.append(("refuse_photo", why))


# How the machine got into its state: the events from a fresh machine (gesture 1 is the press
# that started a recording, if a press did).
SETUPS: dict[str, list[Event]] = {
    "standby": [],
    "standby, disk full": [Fault("storage_full", "disk full")],
    "recording by press 1": [ButtonPressed(1)],
    "recording by trigger": [TriggerStart("holster")],
    "interrupted by a dead camera": [ButtonPressed(1), Fault("camera_fault", "no frames")],
    "interrupted, camera and heat": [ButtonPressed(1), Fault("camera_fault", "no frames"),
                                     Fault("overheated", "86 C")],
    "interrupted at start, disk full": [Fault("storage_full", "disk full"), ButtonPressed(1)],
    "recording audio by press 1": [AudioPressed(1)],
    "interrupted audio, disk full": [AudioPressed(1), Fault("storage_full", "disk full")],
    "shutting down": [Shutdown("SIGTERM")],
}

STANDBY, RECORDING = State.STANDBY, State.RECORDING
INTERRUPTED, SHUTTING_DOWN = State.INTERRUPTED, State.SHUTTING_DOWN

# (setup, event) -> (the state after, the actions taken)
TABLE: list[tuple[str, Event, State, list[Call]]] = [
    ("standby", ButtonPressed(2), RECORDING,
     [("start_recording", "button", "video"), ("show", "recording", "video")]),
    ("standby", ButtonHeld(2), STANDBY, []),
    ("standby", FunctionPressed(), STANDBY, [("explain",)]),
    ("standby", FunctionHeld(), STANDBY, [("declare_exemption",)]),
    ("standby", TriggerStart("holster"), RECORDING,
     [("start_recording", "holster", "video"), ("show", "recording", "video")]),
    ("standby", Fault("storage_full", "disk full"), STANDBY, []),
    ("standby", FaultCleared("storage_full"), STANDBY, []),
    ("standby", Shutdown("SIGTERM"), SHUTTING_DOWN, [("show", "shutting_down")]),
    ("standby", HealthChanged(), STANDBY, [("show", "standby")]),
    ("standby", ButtonTapped(2), STANDBY, []),  # a mark needs a recording
    ("standby", MarkAsked("control"), STANDBY, []),
    ("standby", AudioPressed(2), RECORDING,
     [("start_recording", "audio_button", "audio"), ("show", "recording", "audio")]),
    ("standby", AudioHeld(2), STANDBY, []),
    ("standby", TriggerStart("resume_after_interruption", Mode.AUDIO), RECORDING,
     [("start_recording", "resume_after_interruption", "audio"),
      ("show", "recording", "audio")]),

    ("standby, disk full", ButtonPressed(2), INTERRUPTED,
     [("interrupted", "storage_full", "button while disk full"),
      ("show", "interrupted", "video")]),
    ("standby, disk full", TriggerStart("vehicle"), INTERRUPTED,
     [("interrupted", "storage_full", "vehicle while disk full"),
      ("show", "interrupted", "video")]),
    ("standby, disk full", Fault("storage_full", "still full"), STANDBY, []),
    ("standby, disk full", FaultCleared("storage_full"), STANDBY, []),
    ("standby, disk full", FunctionHeld(), STANDBY, [("declare_exemption",)]),
    ("standby, disk full", AudioPressed(2), INTERRUPTED,
     [("interrupted", "storage_full", "audio_button while disk full"),
      ("show", "interrupted", "audio")]),

    ("recording by press 1", ButtonPressed(2), RECORDING, []),
    ("recording by press 1", ButtonHeld(1), RECORDING, []),  # the starting press, held
    ("recording by press 1", ButtonHeld(2), STANDBY,
     [("stop_recording", "button_hold"), ("show", "standby")]),
    ("recording by press 1", FunctionPressed(), RECORDING, [("explain",)]),
    ("recording by press 1", FunctionHeld(), RECORDING, []),
    ("recording by press 1", TriggerStart("holster"), RECORDING, []),
    ("recording by press 1", Fault("camera_fault", "no frames"), INTERRUPTED,
     [("stop_recording", "camera_fault"), ("interrupted", "camera_fault", "no frames"),
      ("show", "interrupted", "video")]),
    ("recording by press 1", FaultCleared("camera_fault"), RECORDING, []),
    ("recording by press 1", Shutdown("SIGTERM"), SHUTTING_DOWN,
     [("stop_recording", "SIGTERM"), ("show", "shutting_down")]),
    ("recording by press 1", HealthChanged(), RECORDING, [("show", "recording", "video")]),
    ("recording by press 1", ButtonTapped(1), RECORDING, []),  # the starting press, released
    ("recording by press 1", ButtonTapped(2), RECORDING, [("mark", "button")]),
    ("recording by press 1", MarkAsked("control"), RECORDING, [("mark", "control")]),
    ("recording by press 1", AudioPressed(2), RECORDING, []),
    ("recording by press 1", AudioHeld(2), RECORDING, []),  # the audio button stops only sound

    ("recording by trigger", ButtonPressed(1), RECORDING, []),
    ("recording by trigger", ButtonHeld(1), STANDBY,
     [("stop_recording", "button_hold"), ("show", "standby")]),
    ("recording by trigger", TriggerStart("vehicle"), RECORDING, []),
    ("recording by trigger", ButtonTapped(1), RECORDING, [("mark", "button")]),

    ("recording audio by press 1", AudioHeld(1), RECORDING, []),  # the starting press, held
    ("recording audio by press 1", AudioHeld(2), STANDBY,
     [("stop_recording", "button_hold"), ("show", "standby")]),
    ("recording audio by press 1", ButtonHeld(2), STANDBY,
     [("stop_recording", "button_hold"), ("show", "standby")]),
    ("recording audio by press 1", ButtonPressed(2), RECORDING, []),
    ("recording audio by press 1", ButtonTapped(2), RECORDING, [("mark", "button")]),
    ("recording audio by press 1", AudioPressed(2), RECORDING, []),
    ("recording audio by press 1", HealthChanged(), RECORDING,
     [("show", "recording", "audio")]),
    ("recording audio by press 1", Fault("storage_full", "disk full"), INTERRUPTED,
     [("stop_recording", "storage_full"), ("interrupted", "storage_full", "disk full"),
      ("show", "interrupted", "audio")]),

    ("interrupted by a dead camera", ButtonPressed(2), INTERRUPTED, []),
    # Any hold ends the incident, the held press that started the recording too.
    ("interrupted by a dead camera", ButtonHeld(1), STANDBY,
     [("interruption_ended", "button_hold"), ("show", "standby")]),
    ("interrupted by a dead camera", ButtonHeld(2), STANDBY,
     [("interruption_ended", "button_hold"), ("show", "standby")]),
    ("interrupted by a dead camera", FunctionPressed(), INTERRUPTED, [("explain",)]),
    ("interrupted by a dead camera", FunctionHeld(), INTERRUPTED, []),
    ("interrupted by a dead camera", TriggerStart("holster"), INTERRUPTED, []),
    ("interrupted by a dead camera", Fault("overheated", "86 C"), INTERRUPTED, []),
    ("interrupted by a dead camera", Fault("camera_fault", "again"), INTERRUPTED, []),
    ("interrupted by a dead camera", FaultCleared("camera_fault"), RECORDING,
     [("start_recording", "resume_after_camera_fault", "video"),
      ("show", "recording", "video")]),
    ("interrupted by a dead camera", FaultCleared("storage_full"), INTERRUPTED, []),
    ("interrupted by a dead camera", Shutdown("SIGTERM"), SHUTTING_DOWN,
     [("interruption_ended", "SIGTERM"), ("show", "shutting_down")]),
    # The daemon ends itself for a new camera: the gap stays open for the next start.
    ("interrupted by a dead camera", Shutdown("camera_restart_failed", restart=True),
     SHUTTING_DOWN, [("show", "shutting_down")]),
    ("interrupted by a dead camera", HealthChanged(), INTERRUPTED,
     [("show", "interrupted", "video")]),

    ("interrupted by a dead camera", ButtonTapped(2), INTERRUPTED, []),  # nothing to mark
    ("interrupted by a dead camera", MarkAsked("control"), INTERRUPTED, []),
    ("interrupted by a dead camera", AudioPressed(2), INTERRUPTED, []),
    ("interrupted by a dead camera", AudioHeld(2), INTERRUPTED, []),

    ("interrupted, camera and heat", FaultCleared("camera_fault"), INTERRUPTED, []),
    ("interrupted, camera and heat", FaultCleared("overheated"), INTERRUPTED, []),

    ("interrupted at start, disk full", ButtonHeld(1), STANDBY,
     [("interruption_ended", "button_hold"), ("show", "standby")]),
    ("interrupted at start, disk full", FaultCleared("storage_full"), RECORDING,
     [("start_recording", "resume_after_storage_full", "video"),
      ("show", "recording", "video")]),

    ("interrupted audio, disk full", AudioHeld(1), STANDBY,
     [("interruption_ended", "button_hold"), ("show", "standby")]),
    ("interrupted audio, disk full", FaultCleared("storage_full"), RECORDING,
     [("start_recording", "resume_after_storage_full", "audio"),
      ("show", "recording", "audio")]),

    ("shutting down", ButtonPressed(2), SHUTTING_DOWN, []),
    ("shutting down", ButtonTapped(2), SHUTTING_DOWN, []),
    ("shutting down", AudioPressed(2), SHUTTING_DOWN, []),
    ("shutting down", AudioHeld(2), SHUTTING_DOWN, []),
    ("shutting down", MarkAsked("control"), SHUTTING_DOWN, []),
    ("shutting down", ButtonHeld(2), SHUTTING_DOWN, []),
    ("shutting down", FunctionPressed(), SHUTTING_DOWN, []),
    ("shutting down", FunctionHeld(), SHUTTING_DOWN, []),
    ("shutting down", TriggerStart("holster"), SHUTTING_DOWN, []),
    ("shutting down", Fault("storage_full", "disk full"), SHUTTING_DOWN, []),
    ("shutting down", FaultCleared("storage_full"), SHUTTING_DOWN, []),
    ("shutting down", Shutdown("again"), SHUTTING_DOWN, []),
    ("shutting down", HealthChanged(), SHUTTING_DOWN, []),

    # A photo never changes the state; it is refused while a fault stands.
    ("standby", PhotoPressed("button"), STANDBY, [("take_photo", "button")]),
    ("standby, disk full", PhotoPressed("button"), STANDBY, [("refuse_photo", "storage_full")]),
    ("recording by press 1", PhotoPressed("button"), RECORDING, [("take_photo", "button")]),
    ("recording by trigger", PhotoPressed("control"), RECORDING, [("take_photo", "control")]),
    ("interrupted, camera and heat", PhotoPressed("button"), INTERRUPTED,
     [("refuse_photo", "camera_fault, overheated")]),
    ("shutting down", PhotoPressed("button"), SHUTTING_DOWN, []),
]


def machine_in(setup: str) -> tuple[StateMachine, RecordedActions]:
    recorded = RecordedActions()
    actions: Actions = recorded  # the fake is checked against the Protocol by the type checker
    machine = StateMachine(actions)
    for event in SETUPS[setup]:
        machine.handle(event)
    recorded.calls.clear()
    return machine, recorded


@pytest.mark.parametrize(("setup", "event", "after", "calls"), TABLE,
                         ids=[f"{s}: {e}" for s, e, _, _ in TABLE])
def test_transition(setup: str, event: Event, after: State, calls: list[Call]) -> None:
    machine, recorded = machine_in(setup)
    machine.handle(event)
    assert (machine.state, recorded.calls) == (after, calls)


@pytest.mark.parametrize("setup", SETUPS)
def test_setups_reach_the_state_they_are_named_for(setup: str) -> None:
    named = {"standby": STANDBY, "recording": RECORDING, "interrupted": INTERRUPTED,
             "shutting": SHUTTING_DOWN}
    assert machine_in(setup)[0].state is named[setup.split()[0].rstrip(",")]


def test_the_table_covers_every_state_and_every_event() -> None:
    covered = {(machine_in(setup)[0].state, type(event)) for setup, event, _, _ in TABLE}
    every = {(state, kind) for state in State for kind in get_args(Event)}
    assert every - covered == set()


def test_a_fresh_machine_shows_standby() -> None:
    recorded = RecordedActions()
    assert StateMachine(recorded).state is STANDBY
    assert recorded.calls == [("show", "standby")]


def test_a_fault_raised_twice_needs_clearing_once() -> None:
    """Faults are a set by cause: the second report is not a second fault."""
    machine, recorded = machine_in("recording by press 1")
    for event in (Fault("camera_fault", "no frames"), Fault("camera_fault", "no frames"),
                  FaultCleared("camera_fault")):
        machine.handle(event)
    assert machine.state is RECORDING and machine.faults == {}
    assert [c[0] for c in recorded.calls] == ["stop_recording", "interrupted", "show",
                                              "start_recording", "show"]
