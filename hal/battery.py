"""The battery: how much charge is left, so the officer is warned before recording stops.

Readings are what the hardware reports, converted to SI units; a value the
hardware does not report is None, never estimated, because a runtime warning
built on an invented number is worse than none. projected_runtime_s is the one
place that estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.config import BatteryConfig

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


class SimulatedBattery(SysfsBattery):
    """A sysfs-shaped folder the simulated device and the tests discharge by writing files."""

    _kind = "sim"

    def __init__(self, folder: Path) -> None:
        battery = folder / "BAT0"
        if not battery.is_dir():
            battery.mkdir(parents=True)
            for name, value in _SIM_SEED.items():
                (battery / name).write_text(value + "\n", encoding="ascii")
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


def open_battery(config: BatteryConfig, store: Path) -> Battery | None:
    """The configured backend; smbus2 is imported only when the MAX17048 is chosen."""
    if config.backend == "sim":
        return SimulatedBattery(store / "sim" / "power_supply")
    if config.backend == "sysfs":
        return SysfsBattery(Path(config.sysfs_root), config.name)
    if config.backend == "max17048":
        return Max17048Battery(config.i2c_bus, config.i2c_address)
    return None


def projected_runtime_s(state: BatteryState, config: BatteryConfig) -> float | None:
    """Seconds of recording left: the hardware's own estimate, else charge over recording draw.

    The hardware's estimate counts only while discharging: drivers report 0 or a
    stale value on the charger, where the question is how long the charge would last.
    """
    if state.time_to_empty_s is not None and state.status == "Discharging":
        return state.time_to_empty_s
    if state.percent is None:
        return None
    return state.percent / 100 * config.capacity_wh / config.recording_draw_w * 3600
