"""The officer's cues on MockFactory pins: the reminder while recording, and sealed alarms."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.device.state import State
from agent.evidence.chain import read_bodies
from hal.gpio import Health
from tests.support.device import running_daemon, wait_for


def alarms(store: Path) -> list[dict]:
    bodies = read_bodies(store / "chain.jsonl")
    return [body["payload"] for body in bodies if body["type"] == "alarm"]


def buzzes(pin) -> int:
    """Rising edges the buzzer pin has seen."""
    return sum(1 for state in pin.states if state.state)


def test_reminder_pulses_while_recording_only(write_config) -> None:
    with running_daemon(write_config(reminder=0.5)) as daemon:
        buzzer = daemon.controls.factory.pin(daemon.config.gpio.buzzer_pin)
        time.sleep(1.5)
        assert buzzes(buzzer) == 0, "no reminder in standby"
        daemon.controls.press()
        time.sleep(2.4)
        during = buzzes(buzzer)
        assert 3 <= during <= 5, f"{during} reminders in 2.4 s at one per 0.5 s"
        daemon.controls.press(long=True)
        wait_for(lambda: daemon.machine.state is State.STANDBY, what="standby")
        stopped = buzzes(buzzer)
        time.sleep(1.5)
        assert buzzes(buzzer) == stopped, "no reminder after the recording stopped"


def checked_after_now(daemon) -> None:
    """Wait until an alarm check has run wholly after this moment (the cues' thread runs
    one check at a time: once a second one starts, the first is done)."""
    now = time.monotonic()
    wait_for(lambda: daemon.cues._last_check > now, timeout=5, what="a check")
    started = daemon.cues._last_check
    wait_for(lambda: daemon.cues._last_check > started, timeout=5, what="the next check")


def set_attribute(path: Path, text: str) -> None:
    """As the kernel updates a sysfs attribute: a reader sees the old value or the new one,
    never the empty file a truncating write shows for a moment (which reads as no gauge
    estimate, and once cleared the alarm in the middle of this test)."""
    part = path.with_name(path.name + ".new")
    part.write_text(text)
    os.replace(part, path)


def test_low_battery_alarm_follows_the_runtime_estimate(write_config, tmp_path: Path) -> None:
    """Raised when the recording time left crosses [battery] low_minutes (20), not at a low
    percentage with time to spare; sealed, buzzed and shown; cleared on the charger."""
    battery = tmp_path / "store" / "sim" / "power_supply" / "BAT0"
    with running_daemon(write_config(check_interval=0.2)) as daemon:
        buzzer = daemon.controls.factory.pin(daemon.config.gpio.buzzer_pin)
        set_attribute(battery / "capacity", "8\n")  # 8 % of 11.1 Wh at 1 W: 53 min left
        checked_after_now(daemon)
        set_attribute(battery / "time_to_empty_now", f"{21 * 60}\n")  # the gauge's estimate
        checked_after_now(daemon)
        assert "battery_low" not in daemon.cues.active and daemon.health is Health.OK
        set_attribute(battery / "time_to_empty_now", f"{19 * 60}\n")
        wait_for(lambda: "battery_low" in daemon.cues.active, timeout=5, what="the alarm")
        wait_for(lambda: daemon.health is Health.WARNING, timeout=2, what="warning health")
        wait_for(lambda: buzzes(buzzer) >= 3, timeout=3, what="three pulses")
        set_attribute(battery / "time_to_empty_now", f"{22 * 60}\n")  # wavering, not a new pack
        checked_after_now(daemon)
        assert "battery_low" in daemon.cues.active
        set_attribute(battery / "status", "Charging\n")
        wait_for(lambda: not daemon.cues.active, timeout=5, what="the alarm to clear")
        assert daemon.health is Health.OK
    assert alarms(tmp_path / "store") == [
        {"alarm": "battery_low", "raised": True, "value": "8 %, about 19 min left"},
        {"alarm": "battery_low", "raised": False, "value": "8 %, charging"}]


def test_unsynchronised_clock_and_low_storage_alarm(write_config, tmp_path: Path) -> None:
    config = write_config(check_interval=0.2, storage_low_minutes=10**9)
    with running_daemon(config) as daemon:
        daemon.clock.synced = False
        wait_for(lambda: daemon.cues.active == {"clock_unsynced", "storage_low"}, timeout=5,
                 what="both alarms")
    raised = {a["alarm"]: a["value"] for a in alarms(tmp_path / "store") if a["raised"]}
    assert raised["clock_unsynced"].startswith("not synchronised")
    assert "GB free, about" in raised["storage_low"]
