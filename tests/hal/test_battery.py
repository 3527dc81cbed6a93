"""The battery is read as the kernel or the gauge reports it, and projects the runtime left."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from agent.config import BatteryConfig
from hal.battery import (
    BatteryError,
    BatteryState,
    Max17048Battery,
    SimulatedBattery,
    SysfsBattery,
    open_battery,
    projected_runtime_s,
)

PACK = BatteryConfig(capacity_wh=11.1, recording_draw_w=3.0)


def supply(root: Path, name: str, **files: str) -> Path:
    """A power_supply folder as the kernel lays it out, one value per file."""
    folder = root / name
    folder.mkdir(parents=True)
    for attribute, value in files.items():
        (folder / attribute).write_text(value + "\n")
    return folder


def test_low_battery_is_read_from_sysfs_and_projects_runtime(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains", online="0")
    supply(tmp_path, "BAT0", type="Battery", capacity="5", status="Discharging",
           voltage_now="3512000", current_now="-801000")
    state = SysfsBattery(tmp_path).state()
    assert state == BatteryState(5.0, "Discharging", 3.512, -0.801, None, None, "sysfs:BAT0")
    # 5 % of 11.1 Wh at 3 W of recording: 0.185 h.
    assert projected_runtime_s(state, PACK) == pytest.approx(666.0)
    assert state.as_record() == {"percent_x10": 50, "status": "Discharging",
                                 "voltage_mv": 3512, "current_ma": -801, "power_mw": None,
                                 "time_to_empty_s": None, "source": "sysfs:BAT0"}


def test_hardware_time_to_empty_counts_only_while_discharging(tmp_path: Path) -> None:
    folder = supply(tmp_path, "BAT0", type="Battery", capacity="50", status="Discharging",
                    time_to_empty_now="5400", power_now="2500000")
    battery = SysfsBattery(tmp_path, "BAT0")
    state = battery.state()
    assert (state.time_to_empty_s, state.power_w) == (5400.0, 2.5)
    assert projected_runtime_s(state, PACK) == 5400.0
    (folder / "status").write_text("Charging\n")
    (folder / "time_to_empty_now").write_text("0\n")
    assert projected_runtime_s(battery.state(), PACK) == pytest.approx(6660.0)


def test_percent_from_energy_or_charge_when_there_is_no_capacity(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", status="Full",
           energy_now="2220000", energy_full="11100000")
    supply(tmp_path, "BAT1", type="Battery", status="Charging",
           charge_now="750000", charge_full="3000000")
    assert SysfsBattery(tmp_path).state().percent == pytest.approx(20.0)
    assert SysfsBattery(tmp_path, "BAT1").state().percent == pytest.approx(25.0)


def test_missing_or_unreadable_values_are_none_never_invented(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", status="Bogus", voltage_now="n/a",
           energy_now="100", energy_full="0")
    state = SysfsBattery(tmp_path).state()
    assert state == BatteryState(None, "Unknown", None, None, None, None, "sysfs:BAT0")
    assert projected_runtime_s(state, PACK) is None


def test_missing_battery_names_the_folder(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains")
    with pytest.raises(BatteryError, match=f"no battery in {tmp_path}: .* "
                                           r"\(found: AC \(Mains\)\)"):
        SysfsBattery(tmp_path)
    with pytest.raises(BatteryError, match=f"no power supply 'BAT1' in {tmp_path}"):
        SysfsBattery(tmp_path, "BAT1")
    with pytest.raises(BatteryError, match=f"no battery in {tmp_path / 'absent'}: the folder"):
        SysfsBattery(tmp_path / "absent")


def test_removed_battery_is_an_error_at_the_next_read(tmp_path: Path) -> None:
    folder = supply(tmp_path, "BAT0", type="Battery", capacity="80")
    battery = SysfsBattery(tmp_path)
    (folder / "type").write_text("USB\n")
    with pytest.raises(BatteryError, match="found: BAT0 \\(USB\\)"):
        battery.state()


class FakeSMBus:
    """smbus2.SMBus as far as the gauge uses it: word reads, which SMBus sends low byte first.

    This machine has no MAX17048 on an I2C bus, so the boundary is replaced here:
    `words` holds the registers as the datasheet writes them (MSB first) and are
    served byte-swapped, the way the real bus delivers them to read_word_data.
    """

    words: ClassVar[dict[int, int]] = {}
    reads: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, bus: int) -> None:
        self.bus = bus

    def read_word_data(self, address: int, register: int) -> int:
        self.reads.append((address, register))
        if register not in self.words:
            raise OSError(121, "Remote I/O error")
        word = self.words[register]
        return ((word & 0xFF) << 8) | (word >> 8)


@pytest.fixture
def gauge(monkeypatch: pytest.MonkeyPatch) -> type[FakeSMBus]:
    monkeypatch.setattr("smbus2.SMBus", FakeSMBus)
    monkeypatch.setattr(FakeSMBus, "words", {})
    monkeypatch.setattr(FakeSMBus, "reads", [])
    return FakeSMBus


def test_max17048_registers_are_decoded_per_datasheet(gauge: type[FakeSMBus]) -> None:
    # VCELL 0xC350 = 50000 × 78.125 µV; SOC 0x3280 = 50 + 128/256 %; CRATE -10 × 0.208 %/h.
    gauge.words.update({0x02: 0xC350, 0x04: 0x3280, 0x16: 0xFFF6})
    state = Max17048Battery(1, 0x36).state()
    assert state.voltage_v == pytest.approx(3.90625)
    assert state.percent == pytest.approx(50.5)
    assert state.status == "Discharging"
    assert (state.current_a, state.power_w, state.time_to_empty_s) == (None, None, None)
    assert state.source == "max17048:i2c-1@0x36"
    assert state.as_record()["voltage_mv"] == 3906 and state.as_record()["percent_x10"] == 505
    assert {address for address, _ in gauge.reads} == {0x36}

    gauge.words[0x16] = 0x0005
    assert Max17048Battery(1, 0x36).state().status == "Charging"
    gauge.words.update({0x04: 0x6400, 0x16: 0x0000})
    state = Max17048Battery(1, 0x36).state()
    assert (state.percent, state.status) == (100.0, "Full")


def test_max17048_read_failure_names_the_register(gauge: type[FakeSMBus]) -> None:
    with pytest.raises(BatteryError, match="0x36 on /dev/i2c-3: reading register 0x02 failed"):
        Max17048Battery(3, 0x36).state()


def test_simulated_battery_is_seeded_full_then_discharged_by_writing(tmp_path: Path) -> None:
    battery = open_battery(BatteryConfig(backend="sim"), tmp_path)
    assert isinstance(battery, SimulatedBattery)
    state = battery.state()
    assert (state.percent, state.status, state.voltage_v) == (100.0, "Discharging", 3.9)
    assert state.current_a is not None and state.current_a < 0
    assert state.source == "sim:BAT0"
    folder = tmp_path / "sim" / "power_supply" / "BAT0"
    (folder / "capacity").write_text("5\n")
    assert open_battery(BatteryConfig(backend="sim"), tmp_path).state().percent == 5.0


def test_open_battery_backends(tmp_path: Path, gauge: type[FakeSMBus]) -> None:
    supply(tmp_path / "ps", "CELL", type="Battery", capacity="42")
    sysfs = open_battery(BatteryConfig(backend="sysfs", sysfs_root=str(tmp_path / "ps"),
                                       name="CELL"), tmp_path)
    assert sysfs is not None and sysfs.state().percent == 42.0
    gauge.words.update({0x02: 0xC350, 0x04: 0x3280, 0x16: 0x0000})
    gauge_battery = open_battery(BatteryConfig(backend="max17048", i2c_address=0x32), tmp_path)
    assert isinstance(gauge_battery, Max17048Battery)
    assert gauge_battery.state().source == "max17048:i2c-1@0x32"
    assert open_battery(BatteryConfig(backend="none"), tmp_path) is None
