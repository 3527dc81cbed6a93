"""Heat, throttling and under-voltage as alarms, from a sysfs-shaped simulated board; and the
marker that names them as the cause of a power cut while they stand."""

from __future__ import annotations

import json
from pathlib import Path

from agent.config import ThermalConfig
from agent.device.heat_power import MARKER, HeatPowerWatch, take_power_marker
from hal.thermal import open_thermal


class Alarms:
    def __init__(self) -> None:
        self.active: dict[str, str] = {}
        self.log: list[tuple[str, bool]] = []

    def raise_alarm(self, alarm: str, value: str) -> None:
        if alarm not in self.active:
            self.log.append((alarm, True))
        self.active[alarm] = value

    def clear_alarm(self, alarm: str, _value: str) -> None:
        if self.active.pop(alarm, None) is not None:
            self.log.append((alarm, False))


def test_heat_throttling_and_under_voltage_are_alarms_and_marked(tmp_path: Path) -> None:
    config = ThermalConfig(backend="sim")
    thermal = open_thermal(config, tmp_path)
    assert thermal is not None
    alarms = Alarms()
    watch = HeatPowerWatch(config, thermal, tmp_path, alarms.raise_alarm, alarms.clear_alarm,
                           interval_s=1.0)
    sim = tmp_path / "sim"
    watch.check(0.0)
    assert alarms.active == {} and not (tmp_path / MARKER).exists()

    (sim / "thermal_zone0" / "temp").write_text("77500\n")
    (sim / "firmware" / "get_throttled").write_text("50005\n")  # under-voltage, throttled
    watch.check(0.5)
    assert alarms.active == {}, "checked once per interval"
    watch.check(1.0)
    assert set(alarms.active) == {"hot", "under_voltage", "throttled"}
    assert alarms.active["hot"] == "77.5 °C, warn at 75, stop at 80 °C"
    assert "under-voltage, throttled now" in alarms.active["under_voltage"]
    marker = json.loads((tmp_path / MARKER).read_text())
    assert marker["cause"] == "under_voltage" and "under-voltage" in marker["detail"]

    (sim / "firmware" / "get_throttled").write_text("50004\n")  # the supply recovered
    watch.check(2.0)
    assert set(alarms.active) == {"hot", "throttled"}
    assert json.loads((tmp_path / MARKER).read_text())["cause"] == "throttled"

    (sim / "thermal_zone0" / "temp").write_text("60000\n")
    (sim / "firmware" / "get_throttled").write_text("50000\n")  # only the since-boot bits
    watch.check(3.0)
    assert alarms.active == {} and not (tmp_path / MARKER).exists()
    assert alarms.log == [("hot", True), ("under_voltage", True), ("throttled", True),
                          ("under_voltage", False), ("hot", False), ("throttled", False)]


def test_the_marker_is_taken_once(tmp_path: Path) -> None:
    assert take_power_marker(tmp_path) is None
    (tmp_path / MARKER).write_text('{"cause": "under_voltage", "detail": "d", "since": "s"}')
    assert take_power_marker(tmp_path) == {"cause": "under_voltage", "detail": "d",
                                           "since": "s"}
    assert take_power_marker(tmp_path) is None
    (tmp_path / MARKER).write_text("{torn")
    torn = take_power_marker(tmp_path)  # says a marker was left, names no cause
    assert torn is not None and "cause" not in torn and not (tmp_path / MARKER).exists()
