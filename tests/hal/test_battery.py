"""The battery is read as the kernel or the gauge reports it, and projects the runtime left."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from agent.config import BatteryConfig
from hal.battery import (
    BatteryError,
    BatteryState,
    Ina219Battery,
    Max17048Battery,
    SimulatedBattery,
    SysfsBattery,
    li_ion_percent,
    open_battery,
    projected_runtime_s,
)
from hal.board import board_from_model, this_board

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


class FakeIna219:
    """An INA219 (TI SBOS448) behind smbus2.SMBus's documented word transfers.

    smbus2's read_word_data / write_word_data are SMBus "read/write word": the first
    byte on the wire is the word's low byte. The INA219 sends and takes the most
    significant byte first, so a driver that forgets to swap reads and writes garbage
    here as it would on the bus. The chip's arithmetic is the datasheet's: the current
    register is trunc(shunt × calibration / 4096), the power register trunc(current × bus
    / 5000), both 0 while the calibration register is 0 (its value at power-on).
    """

    instances: ClassVar[list[FakeIna219]] = []
    address = 0x42

    def __init__(self, bus: int) -> None:
        self.bus = bus
        self.shunt = 0          # register 0x01, signed, 10 µV
        self.bus_mv = 0         # what register 0x02 holds, before its 4 mV quantisation
        self.overflow = False
        self.calibration = 0
        self.instances.append(self)

    def _register(self, register: int) -> int:
        if register == 0x01:
            return self.shunt & 0xFFFF
        if register == 0x02:
            return (self.bus_mv // 4) << 3 | 0x2 | int(self.overflow)  # CNVR set
        current = int(self.shunt * self.calibration / 4096)
        if register == 0x04:
            return current & 0xFFFF
        if register == 0x03:
            return int(abs(current) * (self.bus_mv // 4) / 5000)
        if register == 0x05:
            return self.calibration
        raise OSError(121, "Remote I/O error")

    def read_word_data(self, address: int, register: int) -> int:
        if address != self.address:
            raise OSError(121, "Remote I/O error")
        msb_first = self._register(register)
        return ((msb_first & 0xFF) << 8) | (msb_first >> 8)

    def write_word_data(self, address: int, register: int, value: int) -> None:
        if address != self.address or register != 0x05:
            raise OSError(121, "Remote I/O error")
        self.calibration = ((value & 0xFF) << 8) | (value >> 8)


@pytest.fixture
def ina219(monkeypatch: pytest.MonkeyPatch) -> type[FakeIna219]:
    monkeypatch.setattr("smbus2.SMBus", FakeIna219)
    monkeypatch.setattr(FakeIna219, "instances", [])
    return FakeIna219


def chip(ina219: type[FakeIna219]) -> FakeIna219:
    [instance] = ina219.instances
    return instance


def test_ina219_calibration_is_the_datasheets_and_waveshares(ina219: type[FakeIna219]) -> None:
    # SBOS448 8.5.1: Cal = trunc(0.04096 / (Current_LSB × Rshunt)). With 100 µA and the
    # UPS HAT's 0.1 ohm that is 4096, the value Waveshare's own code writes; the datasheet's
    # example (0.5 ohm, 20 µA) gives 4096 too.
    battery = open_battery(BatteryConfig(backend="ina219"), Path())
    assert isinstance(battery, Ina219Battery) and battery.calibration == 4096
    assert chip(ina219).calibration == 4096, "written MSB first, as the chip reads it"
    assert Ina219Battery(1, 0x42, shunt_ohm=0.5, cells=2).calibration == 819
    with pytest.raises(BatteryError, match=r"shunt_ohm = 0\.0001 gives calibration 4096000"):
        Ina219Battery(1, 0x42, shunt_ohm=0.0001, cells=2)


def test_ina219_registers_are_decoded_per_datasheet(ina219: type[FakeIna219]) -> None:
    battery = open_battery(BatteryConfig(backend="ina219"), Path())
    fake = chip(ina219)
    # A 2-cell pack at 7.4 V feeding the Pi 1 A: -100 mV on the 0.1 ohm shunt is -10000 LSB
    # (0xD8F0); the current register is -10000 (× 100 µA = -1 A); the power register
    # 10000 × 1850 / 5000 = 3700 (× 2 mW = 7.4 W).
    fake.shunt, fake.bus_mv = -10000, 7400
    state = battery.state()
    assert (state.voltage_v, state.current_a, state.power_w) == pytest.approx((7.4, -1.0, 7.4))
    assert state.status == "Discharging"
    assert state.source == "ina219:i2c-1@0x42"
    # The cell's resting voltage: 3.7 V + 1 A × 0.08 ohm = 3.78 V, between 30 % and 40 %.
    assert state.percent == pytest.approx(li_ion_percent(3.78)) and 30 < state.percent < 40
    assert state.as_record()["current_ma"] == -1000 and state.as_record()["voltage_mv"] == 7400


def test_ina219_overflow_gives_no_current_and_a_lost_calibration_is_rewritten(
        ina219: type[FakeIna219]) -> None:
    battery = open_battery(BatteryConfig(backend="ina219"), Path())
    fake = chip(ina219)
    fake.shunt, fake.bus_mv, fake.overflow = 32000, 8200, True  # +320 mV: full scale
    state = battery.state()
    assert (state.current_a, state.power_w, state.status) == (None, None, "Unknown")
    assert state.voltage_v == pytest.approx(8.2)
    fake.overflow, fake.shunt, fake.calibration = False, 5000, 0  # the chip lost power
    assert battery.state().current_a == pytest.approx(0.5)


def test_ina219_charging_is_not_guessed_from_the_sign_alone(ina219: type[FakeIna219]) -> None:
    battery = open_battery(BatteryConfig(backend="ina219", cells=1, i2c_address=0x42), Path())
    fake = chip(ina219)
    fake.bus_mv = 4000

    def status(shunt_lsb: int) -> str:  # 1 LSB = 10 µV = 100 µA on 0.1 ohm
        fake.shunt = shunt_lsb
        return battery.state().status

    assert status(3) == "Not charging", "0.3 mA of offset or trickle is no charge"
    assert status(-3) == "Not charging"
    assert status(800) == "Charging"
    assert status(300) == "Charging", "30 mA while charging: still charging"
    assert status(-300) == "Not charging", "a reversal inside the band is not a discharge yet"
    assert status(-600) == "Discharging"
    assert status(-100) == "Not charging"
    fake.bus_mv = 4200
    assert status(0) == "Full"


def test_ina219_absent_chip_names_the_address(ina219: type[FakeIna219]) -> None:
    with pytest.raises(BatteryError, match="INA219 at 0x43 on /dev/i2c-1, register 0x05: read"):
        open_battery(BatteryConfig(backend="ina219", i2c_address=0x43), Path())


def test_li_ion_curve_ends_and_middle() -> None:
    assert (li_ion_percent(2.9), li_ion_percent(4.25)) == (0.0, 100.0)
    assert li_ion_percent(3.82) == pytest.approx(50.0)
    assert li_ion_percent(3.95) == pytest.approx(75.0)


@pytest.mark.parametrize(("model", "draw_w"), [
    ("Raspberry Pi 5 Model B Rev 1.0", 6.5),
    ("Raspberry Pi 4 Model B Rev 1.5", 4.5),
    ("Raspberry Pi Zero 2 W Rev 1.0", 2.0),
    ("Some Other Board", 4.5),
])
def test_the_runtime_uses_the_boards_published_draw(model: str, draw_w: float) -> None:
    assert board_from_model(model).recording_draw_w == draw_w


def test_the_draw_comes_from_this_board_unless_configured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")  # the device tree's NUL
    monkeypatch.setattr("hal.battery.this_board", lambda: this_board.__wrapped__(model))
    full = BatteryState(100.0, "Discharging", 7.9, -1.0, None, None, "test")
    # 11.1 Wh at the Pi 5's 6.5 W: 1.7 h, where the old 1.0 W default said 11.1 h.
    board = BatteryConfig(backend="sysfs")
    assert projected_runtime_s(full, board) == pytest.approx(11.1 / 6.5 * 3600)
    assert projected_runtime_s(full, BatteryConfig(backend="sysfs", recording_draw_w=2.0)) \
        == pytest.approx(11.1 / 2.0 * 3600)
    # The simulated device is no board: its battery feeds the 1 W its seed says.
    assert projected_runtime_s(full, BatteryConfig(backend="sim")) == pytest.approx(
        11.1 * 3600)
