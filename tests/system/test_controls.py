"""The officer's button and LEDs on gpiozero MockFactory pins, and the external trigger."""

from __future__ import annotations

from pathlib import Path

from agent.device.state import State, TriggerStart
from agent.evidence.chain import read_bodies
from tests.support.device import running_daemon, wait_for


def records(store: Path, type_: str) -> list[dict]:
    bodies = read_bodies(store / "chain.jsonl")
    return [body for body in bodies if body["type"] == type_]


def test_press_starts_and_hold_stops(write_config, tmp_path: Path) -> None:
    with running_daemon(write_config()) as daemon:
        pin = daemon.controls.factory.pin(17)
        record_led = daemon.controls.factory.pin(27)
        assert not record_led.state
        pin.drive_low()  # the button pulls the pin to ground
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        pin.drive_high()
        wait_for(lambda: record_led.state, timeout=2, what="the red LED lit while recording")
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 1, what="a sealed segment")
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        wait_for(lambda: not record_led.state, timeout=2, what="the red LED off in standby")
    store = tmp_path / "store"
    [start] = records(store, "record_start")
    [stop] = records(store, "record_stop")
    assert start["payload"]["trigger"] == "button"
    assert stop["payload"]["reason"] == "button_hold"
    assert stop["payload"]["recording"] == start["seq"]


def test_holding_the_press_that_started_does_not_stop(write_config, tmp_path: Path) -> None:
    with running_daemon(write_config()) as daemon:
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        assert daemon.controls.button.is_held is False
        assert daemon.machine.state is State.RECORDING
        daemon.controls.press()
        assert daemon.machine.state is State.RECORDING, "a short press never stops"
    assert records(tmp_path / "store", "record_stop")[0]["payload"]["reason"] == "test finished"


def test_external_trigger_starts_but_cannot_stop(write_config, tmp_path: Path) -> None:
    with running_daemon(write_config()) as daemon:
        daemon.post(TriggerStart("external:holster"))
        wait_for(lambda: daemon.machine.state is State.RECORDING, what="recording")
        daemon.post(TriggerStart("external:holster"))
        daemon.controls.press()
        wait_for(lambda: daemon.recorder.stats.segments_sealed >= 2, what="two segments")
        assert daemon.machine.state is State.RECORDING
    store = tmp_path / "store"
    assert [r["payload"]["trigger"] for r in records(store, "record_start")] == [
        "external:holster"]
