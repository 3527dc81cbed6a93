"""The SoC's temperature and the firmware's power flags, so recording is stopped and sealed
before heat stops it for us, and the officer hears of throttling and under-voltage.

Linux exposes each sensor as a thermal zone (Documentation/driver-api/thermal/
sysfs-api.rst): `temp` in millidegrees Celsius. A Raspberry Pi's firmware reports
under-voltage and throttling as the word `vcgencmd get_throttled` prints, which the
kernel's firmware driver also gives in sysfs (`get_throttled`, hexadecimal); where that
file is missing, the raspberrypi-hwmon driver's `in0_lcrit_alarm` (hwmon `rpi_volt`)
still says whether the supply is under-voltage now. The simulated device has folders of
the same shape in the store, which the tests heat and starve by writing the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.config import ThermalConfig
from agent.durable import write_file

# Bits of the firmware's word: now (0-3) and since boot (16-19).
UNDER_VOLTAGE, FREQ_CAPPED, THROTTLED, SOFT_TEMP_LIMIT = 0x1, 0x2, 0x4, 0x8
_NAMES = {UNDER_VOLTAGE: "under-voltage", FREQ_CAPPED: "ARM frequency capped",
          THROTTLED: "throttled", SOFT_TEMP_LIMIT: "soft temperature limit"}
_OCCURRED_SHIFT = 16


class ThermalError(Exception):
    """The configured thermal zone cannot be read."""


@dataclass(frozen=True)
class PowerFlags:
    """The firmware's word (None where only the hwmon alarm was found) and what it says now."""

    word: int | None
    under_voltage: bool
    source: str

    @property
    def throttled(self) -> bool:
        """Slowed now: frequency capped, throttled or at the soft temperature limit."""
        return self.word is not None and bool(self.word & (FREQ_CAPPED | THROTTLED |
                                                           SOFT_TEMP_LIMIT))

    def describe(self) -> str:
        if self.word is None:
            return f"{'under-voltage' if self.under_voltage else 'voltage normal'} ({self.source})"
        now = [name for bit, name in _NAMES.items() if self.word & bit]
        since = [name for bit, name in _NAMES.items() if self.word >> _OCCURRED_SHIFT & bit]
        return (f"{', '.join(now) or 'normal'} now; since boot: {', '.join(since) or 'nothing'}"
                f" (0x{self.word:x}, {self.source})")

    @classmethod
    def from_word(cls, word: int, source: str) -> PowerFlags:
        return cls(word, bool(word & UNDER_VOLTAGE), source)


class Thermal(Protocol):
    def celsius(self) -> float: ...

    def power_flags(self) -> PowerFlags | None: ...


class SysfsThermal:
    def __init__(self, zone: Path, firmware_flags: Path | None = None,
                 hwmon_root: Path | None = None) -> None:
        self.zone = zone
        self.firmware_flags = firmware_flags
        self.hwmon_root = hwmon_root
        self.celsius()  # a zone that cannot be read fails at start, not at every check

    def celsius(self) -> float:
        path = self.zone / "temp"
        try:
            raw = path.read_text(encoding="ascii").strip()
        except OSError as exc:
            raise ThermalError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            return int(raw) / 1000
        except ValueError:
            raise ThermalError(f"{path}: {raw!r} is not millidegrees Celsius") from None

    def power_flags(self) -> PowerFlags | None:
        """The firmware's flags, else the hwmon under-voltage alarm, else None (not a Pi)."""
        if self.firmware_flags is not None:
            try:
                text = self.firmware_flags.read_text(encoding="ascii").strip()
            except OSError:
                text = None
            if text is not None:
                try:
                    return PowerFlags.from_word(int(text, 16), str(self.firmware_flags))
                except ValueError:
                    raise ThermalError(f"{self.firmware_flags}: {text!r} is not the "
                                       "firmware's hexadecimal word") from None
        alarm = _rpi_volt_alarm(self.hwmon_root) if self.hwmon_root is not None else None
        return alarm


def _rpi_volt_alarm(root: Path) -> PowerFlags | None:
    for folder in sorted(root.glob("hwmon*")):
        try:
            if (folder / "name").read_text(encoding="ascii").strip() != "rpi_volt":
                continue
            alarm = (folder / "in0_lcrit_alarm").read_text(encoding="ascii").strip()
        except OSError:
            continue
        return PowerFlags(None, alarm == "1", str(folder / "in0_lcrit_alarm"))
    return None


class SimulatedThermal(SysfsThermal):
    """Starts at a comfortable 45 °C, with the firmware reporting nothing wrong."""

    def __init__(self, zone: Path, firmware_flags: Path) -> None:
        if not (zone / "temp").exists():
            zone.mkdir(parents=True, exist_ok=True)
            write_file(zone / "temp", b"45000\n", mode=0o644)
        if not firmware_flags.exists():
            firmware_flags.parent.mkdir(parents=True, exist_ok=True)
            write_file(firmware_flags, b"0\n", mode=0o644)
        super().__init__(zone, firmware_flags)


def open_thermal(config: ThermalConfig, store: Path) -> Thermal | None:
    if config.backend == "sim":
        return SimulatedThermal(store / "sim" / "thermal_zone0",
                                store / "sim" / "firmware" / "get_throttled")
    if config.backend == "sysfs":
        return SysfsThermal(Path(config.zone), Path(config.firmware_flags),
                            Path(config.hwmon_root))
    return None
