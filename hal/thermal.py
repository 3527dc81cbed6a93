"""The SoC's temperature, so recording is stopped and sealed before heat stops it for us.

Linux exposes each sensor as a thermal zone (Documentation/driver-api/thermal/
sysfs-api.rst): `temp` in millidegrees Celsius. The simulated device has a folder of
the same shape in the store, which the tests heat by writing the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from agent.config import ThermalConfig


class ThermalError(Exception):
    """The configured thermal zone cannot be read."""


class Thermal(Protocol):
    def celsius(self) -> float: ...


class SysfsThermal:
    def __init__(self, zone: Path) -> None:
        self.zone = zone
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


class SimulatedThermal(SysfsThermal):
    """Starts at a comfortable 45 °C."""

    def __init__(self, zone: Path) -> None:
        if not (zone / "temp").exists():
            zone.mkdir(parents=True, exist_ok=True)
            (zone / "temp").write_text("45000\n", encoding="ascii")
        super().__init__(zone)


def open_thermal(config: ThermalConfig, store: Path) -> Thermal | None:
    if config.backend == "sim":
        return SimulatedThermal(store / "sim" / "thermal_zone0")
    if config.backend == "sysfs":
        return SysfsThermal(Path(config.zone))
    return None
