"""The battery: how much charge is left, so the officer is warned before recording stops.

Readings are what the hardware reports, converted to SI units; a value the
hardware does not report is None, never estimated, because a runtime warning
built on an invented number is worse than none. Two places estimate, and say so:
projected_runtime_s, and the INA219's charge from the cell voltage (the chip
measures no charge).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.config import BatteryConfig
from agent.durable import write_file
from hal.board import this_board

_MICRO = 1_000_000
STATUSES = ("Charging", "Discharging", "Full", "Not charging", "Unknown")


class BatteryError(Exception):
    """The configured battery cannot be found or read."""


@dataclass(frozen=True)
class BatteryState:
    percent: float | None
    status: str
    voltage_v: float | None
    current_a: float | None
    power_w: float | None
    time_to_empty_s: float | None
    source: str

    @property
    def on_charger(self) -> bool:
        """Charging or full: the recording does not run the pack down."""
        return self.status in ("Charging", "Full")

    def as_record(self) -> dict[str, object]:
        """Integers in small units: the chain's canonical JSON admits no floats."""
        return {"percent_x10": _scaled(self.percent, 10), "status": self.status,
                "voltage_mv": _scaled(self.voltage_v, 1000),
                "current_ma": _scaled(self.current_a, 1000),
                "power_mw": _scaled(self.power_w, 1000),
                "time_to_empty_s": _scaled(self.time_to_empty_s, 1), "source": self.source}


def _scaled(value: float | None, factor: int) -> int | None:
    return None if value is None else round(value * factor)


class Battery(Protocol):
    def state(self) -> BatteryState: ...


class SysfsBattery:
    """Linux power_supply class (Documentation/ABI/testing/sysfs-class-power).

    Units there: µV, µA, µW, µWh, µAh, seconds. The sign of current_now follows
    the driver (the ABI asks for negative while discharging; older drivers differ),
    so it is passed through unchanged.
    """

    _kind = "sysfs"

    def __init__(self, root: Path, name: str = "") -> None:
        self.root = root
        self.name = name
        self._folder()  # fail at start, not at the first low-battery check

    def _folder(self) -> Path:
        """The supply's folder, looked up on every read: batteries can be swapped."""
        if self.name:
            folder = self.root / self.name
            if not folder.is_dir():
                raise BatteryError(f"no power supply {self.name!r} in {self.root}")
            return folder
        if not self.root.is_dir():
            raise BatteryError(f"no battery in {self.root}: the folder does not exist")
        supplies = sorted(path for path in self.root.iterdir() if path.is_dir())
        types = {path.name: _read_text(path / "type") for path in supplies}
        for path in supplies:
            if types[path.name] == "Battery":
                return path
        found = ", ".join(f"{name} ({kind or 'no type'})" for name, kind in types.items())
        raise BatteryError(f"no battery in {self.root}: no power supply there has type "
                           f"Battery (found: {found or 'nothing'})")

    def state(self) -> BatteryState:
        folder = self._folder()
        status = _read_text(folder / "status")
        return BatteryState(
            percent=_percent(folder),
            status=status if status in STATUSES else "Unknown",
            voltage_v=_read_scaled(folder / "voltage_now", _MICRO),
            current_a=_read_scaled(folder / "current_now", _MICRO),
            power_w=_read_scaled(folder / "power_now", _MICRO),
            time_to_empty_s=_read_scaled(folder / "time_to_empty_now"),
            source=f"{self._kind}:{folder.name}")


def _percent(folder: Path) -> float | None:
    """capacity when the driver reports it, else the gauge's now/full in energy or charge."""
    capacity = _read_scaled(folder / "capacity")
    if capacity is not None:
        return capacity
    for quantity in ("energy", "charge"):
        now = _read_scaled(folder / f"{quantity}_now")
        full = _read_scaled(folder / f"{quantity}_full")
        if now is not None and full:
            return 100.0 * now / full
    return None


def _read_text(path: Path) -> str | None:
    """A sysfs attribute; None when absent or when the driver refuses (e.g. ENODATA)."""
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_scaled(path: Path, divisor: int = 1) -> float | None:
    """An integer attribute in SI units (sysfs counts in micro-units)."""
    text = _read_text(path)
    try:
        return None if text is None else int(text) / divisor
    except ValueError:
        return None


# A full cell at 3.9 V feeding about 1 W of recording; negative current = discharging (the ABI).
_SIM_SEED = {"type": "Battery", "capacity": "100", "status": "Discharging",
             "voltage_now": "3900000", "current_now": "-256000"}
SIM_DRAW_W = 1.0  # the simulated device's recording draw, as its seed says; no board's


class SimulatedBattery(SysfsBattery):
    """A sysfs-shaped folder the simulated device and the tests discharge by writing files."""

    _kind = "sim"

    def __init__(self, folder: Path) -> None:
        battery = folder / "BAT0"
        battery.mkdir(parents=True, exist_ok=True)
        for name, value in _SIM_SEED.items():  # each one missing: a cut may take some
            if not (battery / name).exists():
                write_file(battery / name, f"{value}\n".encode("ascii"), mode=0o644)
        super().__init__(folder, "BAT0")


class Max17048Battery:
    """MAX17048/MAX17049 ModelGauge fuel gauge over I2C with smbus2, per the Maxim datasheet.

    Registers are 16-bit, most significant byte first: VCELL 0x02 (78.125 µV per
    cell per LSB), SOC 0x04 (1/256 % per LSB), CRATE 0x16 (signed, 0.208 %/h per
    LSB). voltage_v is per cell (a MAX17049's pack is twice it). The gauge measures
    no current, power or time to empty, so those stay None.
    """

    _VCELL, _SOC, _CRATE = 0x02, 0x04, 0x16

    def __init__(self, bus: int, address: int) -> None:
        from smbus2 import SMBus

        self.bus = bus
        self.address = address
        try:
            self._i2c = SMBus(bus)
        except OSError as exc:
            raise BatteryError(f"MAX17048: cannot open /dev/i2c-{bus}: {exc.strerror}") from exc

    def _word(self, register: int) -> int:
        try:
            raw = self._i2c.read_word_data(self.address, register)
        except OSError as exc:
            raise BatteryError(f"MAX17048 at 0x{self.address:02x} on /dev/i2c-{self.bus}: "
                               f"reading register 0x{register:02x} failed: {exc}") from exc
        return ((raw & 0xFF) << 8) | (raw >> 8)  # SMBus words are little-endian

    def state(self) -> BatteryState:
        vcell = self._word(self._VCELL)
        soc = self._word(self._SOC)
        crate = self._word(self._CRATE)
        if crate & 0x8000:  # two's complement: negative while discharging
            crate -= 0x10000
        percent = soc / 256
        if crate > 0:
            status = "Charging"
        elif crate < 0:
            status = "Discharging"
        else:
            status = "Full" if percent >= 100 else "Not charging"
        return BatteryState(percent=percent, status=status, voltage_v=vcell * 78.125e-6,
                            current_a=None, power_w=None, time_to_empty_s=None,
                            source=f"max17048:i2c-{self.bus}@0x{self.address:02x}")


# Open-circuit voltage of one Li-ion cell (graphite / NMC or NCA, 18650 class) against its
# state of charge: a typical published curve (docs/hardware.md), so an ESTIMATE.
LI_ION_OCV = ((3.00, 0.0), (3.45, 5.0), (3.68, 10.0), (3.74, 20.0), (3.77, 30.0),
              (3.79, 40.0), (3.82, 50.0), (3.87, 60.0), (3.92, 70.0), (3.98, 80.0),
              (4.06, 90.0), (4.20, 100.0))
# A cell's resistance with its holder and wiring: under load the terminal voltage is this
# times the current below the open-circuit voltage the curve is read at.
CELL_RESISTANCE_OHM = 0.08


def li_ion_percent(cell_volts: float) -> float:
    """State of charge from one cell's open-circuit voltage, by the curve; an estimate."""
    if cell_volts <= LI_ION_OCV[0][0]:
        return 0.0
    for (v0, p0), (v1, p1) in itertools.pairwise(LI_ION_OCV):
        if cell_volts <= v1:
            return p0 + (p1 - p0) * (cell_volts - v0) / (v1 - v0)
    return 100.0


class ChargeDirection:
    """Charging or discharging from a noisy current, with hysteresis.

    Near zero the sign means nothing: the INA219's offset (±10 µV on the shunt, datasheet)
    and a charger tapering at full charge give small currents of either sign. So the
    status changes only when the current passes a threshold, and leaves a direction only
    when it falls back under half of it; in between it stays. Positive current charges.
    """

    ENTER_A = 0.05
    LEAVE_A = 0.025

    def __init__(self) -> None:
        self.status = "Unknown"

    def update(self, current_a: float, percent: float) -> str:
        if current_a >= self.ENTER_A:
            self.status = "Charging"
        elif current_a <= -self.ENTER_A:
            self.status = "Discharging"
        elif (abs(current_a) < self.LEAVE_A or self.status not in ("Charging", "Discharging")
              or (self.status == "Charging") != (current_a > 0)):
            self.status = "Full" if percent >= 99 else "Not charging"
        return self.status


class Ina219Battery:
    """A pack behind an INA219 current/power monitor (TI SBOS448), as on Waveshare's UPS HAT
    (B) (2 cells, 0x42) and (C) (1 cell, 0x43), both with a 0.1 ohm shunt.

    Registers are 16-bit, most significant byte first on the wire, which SMBus word
    transfers carry least significant byte first, so every word is byte-swapped. Bus
    voltage 0x02: bits 15..3 in 4 mV, bit 1 CNVR, bit 0 OVF (the current and power overflowed
    and mean nothing). Shunt voltage 0x01: signed, 10 µV. Current 0x04 = shunt × CAL / 4096,
    signed, in CURRENT_LSB_A; power 0x03 in 20 × CURRENT_LSB_A; both read 0 until the
    calibration 0x05 = trunc(0.04096 / (CURRENT_LSB_A × Rshunt)) is written, and the chip
    forgets it when it loses power, so it is checked on every read. The chip knows no charge:
    percent is estimated from the cell voltage (LI_ION_OCV) corrected for the current.
    """

    _SHUNT, _BUS, _POWER, _CURRENT, _CALIBRATION = 0x01, 0x02, 0x03, 0x04, 0x05
    CURRENT_LSB_A = 100e-6  # 3.2768 A full scale, past the 320 mV the shunt ADC reads at 0.1 ohm

    def __init__(self, bus: int, address: int, shunt_ohm: float, cells: int) -> None:
        from smbus2 import SMBus

        self.bus, self.address, self.cells = bus, address, cells
        self.calibration = int(0.04096 / (self.CURRENT_LSB_A * shunt_ohm))
        if not 0 < self.calibration <= 0xFFFE:
            raise BatteryError(f"INA219: shunt_ohm = {shunt_ohm:g} gives calibration "
                               f"{self.calibration}, outside the register's range")
        self._direction = ChargeDirection()
        try:
            self._i2c = SMBus(bus)
        except OSError as exc:
            raise BatteryError(f"INA219: cannot open /dev/i2c-{bus}: {exc.strerror}") from exc
        self._calibrate()

    def _where(self, register: int) -> str:
        return f"INA219 at 0x{self.address:02x} on /dev/i2c-{self.bus}, register 0x{register:02x}"

    def _read(self, register: int) -> int:
        try:
            raw = self._i2c.read_word_data(self.address, register)
        except OSError as exc:
            raise BatteryError(f"{self._where(register)}: read failed: {exc}") from exc
        return ((raw & 0xFF) << 8) | (raw >> 8)

    def _write(self, register: int, value: int) -> None:
        try:
            self._i2c.write_word_data(self.address, register,
                                      ((value & 0xFF) << 8) | (value >> 8))
        except OSError as exc:
            raise BatteryError(f"{self._where(register)}: write failed: {exc}") from exc

    def _calibrate(self) -> None:
        if self._read(self._CALIBRATION) != self.calibration:
            self._write(self._CALIBRATION, self.calibration)

    def state(self) -> BatteryState:
        self._calibrate()
        bus = self._read(self._BUS)
        volts = (bus >> 3) * 0.004
        overflow = bool(bus & 0x1)
        current = None if overflow else _signed(self._read(self._CURRENT)) * self.CURRENT_LSB_A
        power = None if overflow else self._read(self._POWER) * 20 * self.CURRENT_LSB_A
        # Resting voltage of one cell: a discharge (negative) pulls the terminal below it.
        cell_ocv = volts / self.cells - (current or 0.0) * CELL_RESISTANCE_OHM
        percent = li_ion_percent(cell_ocv)
        status = "Unknown" if current is None else self._direction.update(current, percent)
        return BatteryState(percent=percent, status=status, voltage_v=volts, current_a=current,
                            power_w=power, time_to_empty_s=None,
                            source=f"ina219:i2c-{self.bus}@0x{self.address:02x}")


def _signed(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


_DEFAULT_ADDRESS = {"max17048": 0x36, "ina219": 0x42}


def open_battery(config: BatteryConfig, store: Path) -> Battery | None:
    """The configured backend; smbus2 is imported only when an I2C gauge is chosen."""
    if config.backend == "sim":
        return SimulatedBattery(store / "sim" / "power_supply")
    if config.backend == "sysfs":
        return SysfsBattery(Path(config.sysfs_root), config.name)
    address = config.i2c_address or _DEFAULT_ADDRESS.get(config.backend, 0)
    if config.backend == "max17048":
        return Max17048Battery(config.i2c_bus, address)
    if config.backend == "ina219":
        return Ina219Battery(config.i2c_bus, address, config.shunt_ohm, config.cells)
    return None


def recording_draw_w(config: BatteryConfig) -> float:
    """The configured draw, else the simulated device's, else the published figure for this
    board."""
    if config.recording_draw_w is not None:
        return config.recording_draw_w
    return SIM_DRAW_W if config.backend == "sim" else this_board().recording_draw_w


def projected_runtime_s(state: BatteryState, config: BatteryConfig) -> float | None:
    """Seconds of recording left: the hardware's own estimate, else charge over recording draw.

    The hardware's estimate counts only while discharging: drivers report 0 or a
    stale value on the charger, where the question is how long the charge would last.
    """
    if state.time_to_empty_s is not None and state.status == "Discharging":
        return state.time_to_empty_s
    if state.percent is None:
        return None
    return state.percent / 100 * config.capacity_wh / recording_draw_w(config) * 3600
